"""pytest_durableflow: fixtures and a crash harness that prove durableflow workflows survive crashes."""
