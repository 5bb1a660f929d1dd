"""``ttscale serve``: an OpenAI-compatible server that applies any strategy to any upstream engine.

    from ttscale.serve import ServeConfig, create_app
    app = create_app(ServeConfig(max_concurrency=8), engine=my_engine)   # a FastAPI app

See :mod:`ttscale.serve.app` for the protocol (strategy selection, streaming progress, usage,
limits, cancellation) and :func:`ttscale.serve.command.serve_command` for the CLI.
"""

from ttscale.serve.app import create_app
from ttscale.serve.config import API_KEY_ENV, ServeConfig
from ttscale.serve.metrics import Metrics
from ttscale.serve.observed import ObservedContext
from ttscale.serve.state import ServeState

__all__ = ["API_KEY_ENV", "Metrics", "ObservedContext", "ServeConfig", "ServeState", "create_app"]
