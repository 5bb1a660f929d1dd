"""``ttscale view``: runs, problems, search trees, votes and sweeps in the browser (local, no internet)."""
