"""``python -m flexcnn``: the same as the ``flexcnn`` console script."""

from flexcnn.cli import main

if __name__ == "__main__":
    main()
