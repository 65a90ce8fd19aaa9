"""The ``durableflow`` command."""


def main() -> int:
    return 0
