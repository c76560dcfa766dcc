"""The command line (`main`), the post-receive hook (`hook`), following a job, `doctor`.

Deliberately empty: the hook's fast path imports hookdeploy.cli.hook without click.
"""
