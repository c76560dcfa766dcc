"""What a deploy does to git, Docker and nginx, and the worker that runs jobs.

Imports hookdeploy.core only.
"""
