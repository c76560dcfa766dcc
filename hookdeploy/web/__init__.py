"""The HTTP side: forge webhooks, the JSON API, the dashboard, metrics and the waitress server.

Imports hookdeploy.core, hookdeploy.engine and hookdeploy.actions; never hookdeploy.cli.
"""
