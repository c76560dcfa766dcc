"""The `hookdeploy` console script and `python -m hookdeploy`.

`hook APP`, which post-receive runs inside every push, goes straight to hookdeploy.cli.hook
without importing click and the rest of the CLI: that halves what the hook adds to a push.
"""

import sys


def main() -> None:
    """Run the post-receive fast path, or the click command line."""
    from hookdeploy.cli import hook

    fast = hook.fast_path_arguments(sys.argv[1:])
    if fast is not None:
        sys.exit(hook.run(*fast))
    from hookdeploy.cli.main import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
