"""The handbook's tools: the mkdocs hook, the reference generators and the checks of its examples.

Kept outside the hookdeploy package (they need mkdocs' extra, which a server install lacks); they read
hookdeploy's own schema, parser and click app, so the handbook cannot drift from the code.
"""
