"""The errors module: its drawn tree matches the real classes, and the package exports exactly __all__."""

import inspect
import re
from types import ModuleType

import durableflow
from durableflow import _errors


def documented_tree() -> dict[str, str]:
    """Parse the tree in durableflow._errors' docstring into {class name: documented parent}."""
    doc = inspect.getdoc(_errors) or ""
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # (depth, name) of the open ancestors
    for line in doc.splitlines():
        match = re.match(r"^(?P<prefix>[\s│├└─]*?)(?P<name>[A-Z]\w+)\b", line)
        if match is None or not match.group("name").endswith("Error"):
            continue
        prefix = match.group("prefix")
        if "├" not in prefix and "└" not in prefix:
            if prefix.strip():
                continue
            stack = [(-1, match.group("name"))]  # the root
            continue
        depth = len(prefix)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[match.group("name")] = stack[-1][1]
        stack.append((depth, match.group("name")))
    return parents


def test_docstring_draws_a_tree_rooted_at_durableflow_error() -> None:
    """The parsed tree is non-trivial and every branch leads back to DurableflowError."""
    tree = documented_tree()
    assert len(tree) >= 10
    for name in tree:
        seen = {name}
        while name in tree:
            name = tree[name]
            assert name not in seen
            seen.add(name)
        assert name == "DurableflowError"


def test_documented_parents_are_the_real_bases() -> None:
    """Each class drawn in the tree has its drawn parent as a direct base."""
    for name, parent in documented_tree().items():
        cls = getattr(durableflow, name)
        assert getattr(durableflow, parent) in cls.__bases__, f"{name} is drawn under {parent}"


def test_every_durableflow_error_is_drawn() -> None:
    """Every DurableflowError subclass the package exports appears in the tree."""
    exported = {
        name
        for name in durableflow.__all__
        if inspect.isclass(getattr(durableflow, name))
        and issubclass(getattr(durableflow, name), durableflow.DurableflowError)
        and name != "DurableflowError"
    }
    assert exported == set(documented_tree())


def test_errors_also_match_the_builtin_they_refine() -> None:
    """Errors that mean a timeout, a lookup miss or a connection failure can be caught as those builtins."""
    assert issubclass(durableflow.WorkflowTimeoutError, TimeoutError)
    assert issubclass(durableflow.RunNotFoundError, LookupError)
    assert issubclass(durableflow.StoreUnavailableError, ConnectionError)
    assert issubclass(durableflow.SerializationError, ValueError)  # a value that cannot be stored
    assert issubclass(durableflow.DurableflowError, Exception)


def test_errors_with_context_name_it_in_their_message() -> None:
    """SnapshotError, RunNotFoundError and RunExistsError say which run they are about."""
    snapshot = durableflow.SnapshotError("checksum mismatch", run_id="r1", seq=4)
    assert (snapshot.run_id, snapshot.seq) == ("r1", 4)
    assert "'r1'" in str(snapshot) and "4" in str(snapshot) and "checksum mismatch" in str(snapshot)
    assert str(durableflow.SnapshotError("plain")) == "plain"
    missing = durableflow.RunNotFoundError("r2")
    assert missing.run_id == "r2" and "'r2'" in str(missing)
    exists = durableflow.RunExistsError("r3")
    assert exists.run_id == "r3" and "resume" in str(exists)


def test_a_lost_lease_names_the_new_holder_or_says_it_expired() -> None:
    taken = durableflow.RunLeaseError.lost("r4", "host/1:2:ab", 12.5)
    assert "lost its lease on run 'r4' to worker 'host/1:2:ab'" in str(taken)
    expired = durableflow.RunLeaseError.lost("r4", None, None)
    assert "lost its lease on run 'r4' (it expired, or another worker took it)" in str(expired)
    assert "None" not in str(expired)


def test_all_equals_the_public_names() -> None:
    """durableflow.__all__ lists exactly the package's public names, once each, and each resolves.

    Subpackages such as ``durableflow.cli`` appear as attributes once imported; they are not names of the API."""
    public = {
        name
        for name, value in vars(durableflow).items()
        if not name.startswith("_") and (not isinstance(value, ModuleType) or callable(value))
    }  # retry_policy: a module callable as the function of its name
    assert len(durableflow.__all__) == len(set(durableflow.__all__))
    assert set(durableflow.__all__) == public
    for name in durableflow.__all__:
        assert getattr(durableflow, name) is not None


def test_all_holds_the_documented_contract() -> None:
    """The names the design contract promises are all exported."""
    promised = {
        "Workflow", "step", "Context", "Event", "StartEvent", "StopEvent", "InputRequiredEvent",
        "HumanResponseEvent", "Resource", "override_resources", "ConstantDelayRetryPolicy",
        "ExponentialBackoffRetryPolicy", "WorkflowHandler", "MemoryCheckpointer", "SQLiteCheckpointer",
        "RedisCheckpointer", "crashpoint", "hookimpl", "plugin_manager", "DurableflowError",
        "WorkflowValidationError", "WorkflowTimeoutError", "SerializationError", "SnapshotError",
        "RunNotFoundError", "RunLeaseError",
    }  # fmt: skip
    assert promised <= set(durableflow.__all__)
