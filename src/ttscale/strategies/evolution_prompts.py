"""Mind Evolution's prompts (:mod:`ttscale.strategies.mind_evolution`): the defaults of its prompt
parameters, each overridable with ``-p NAME=...``. Empty feedback shows as :data:`NO_FEEDBACK`."""

from __future__ import annotations

INIT_PROMPT = (
    "Solve the following problem. Write a complete solution in the format the problem asks for.\n\n"
    "Problem:\n{problem}"
)
"""First proposals; placeholder ``{problem}``."""

RECOMBINE_PROMPT = (
    "Problem:\n{problem}\n\n"
    "Here are earlier proposed solutions, each with the evaluation it received:\n\n{parents}\n\n"
    "Write one new, complete solution that keeps what is right in them and fixes what the "
    "evaluations point out. Use the format the problem asks for."
)
"""Recombination; placeholders ``{problem}``, ``{parents}`` (the parents rendered with
:data:`PARENT_TEMPLATE`, separated by blank lines)."""

PARENT_TEMPLATE = "Proposed solution {index} (score {fitness}):\n{solution}\nEvaluation:\n{feedback}"
"""One parent in ``{parents}``; placeholders ``{index}`` (1-based), ``{solution}``, ``{fitness}``,
``{feedback}``."""

CRITIC_PROMPT = (
    "Problem:\n{problem}\n\n"
    "Proposed solution:\n{solution}\n\n"
    "An automatic checker gave it the score {fitness} and reported:\n{feedback}\n\n"
    "You are a critic. Explain briefly what is wrong with this solution and how to fix it. "
    "Do not write a new solution."
)
"""Critic turn; placeholders ``{problem}``, ``{solution}``, ``{fitness}``, ``{feedback}``."""

AUTHOR_PROMPT = (
    "Problem:\n{problem}\n\n"
    "Your previous solution:\n{solution}\n\n"
    "An automatic checker gave it the score {fitness} and reported:\n{feedback}\n\n"
    "A critic commented:\n{critique}\n\n"
    "Write an improved, complete solution that fixes these problems. Use the format the problem asks for."
)
"""Author turn; placeholders ``{problem}``, ``{solution}``, ``{fitness}``, ``{feedback}``,
``{critique}``."""

NO_FEEDBACK = "(no detailed feedback)"
"""What ``{feedback}`` shows when the evaluator gave none."""

SOLUTION_KEYS = ("problem", "solution", "fitness", "feedback")
"""The placeholders every solution-showing prompt may use (:data:`CRITIC_PROMPT`'s)."""
