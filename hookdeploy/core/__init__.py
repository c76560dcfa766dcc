"""The ground floor: errors, names, models, deploy.toml, the job store, API tokens, logging.

Nothing here imports Docker, git, click or Flask, nor any other hookdeploy layer.
"""
