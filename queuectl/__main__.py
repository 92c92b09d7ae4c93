"""Allow ``python -m queuectl`` to behave exactly like the ``queuectl`` script."""

from queuectl.cli.main import main

if __name__ == "__main__":
    main()
