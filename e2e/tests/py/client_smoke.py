"""The official Python `kubernetes` client against Rustkube's apiserver: list, create,
patch, delete, errors, and watches (from a resourceVersion, and from "now" with the
synthetic ADDED events the client expects). Usage: client_smoke.py KUBECONFIG"""

import sys

from kubernetes import client, config, watch


def main(kubeconfig):
    config.load_kube_config(config_file=kubeconfig)
    v1 = client.CoreV1Api()
    apps = client.AppsV1Api()

    names = [n.metadata.name for n in v1.list_namespace().items]
    assert "default" in names and "kube-system" in names, names

    v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="py")))
    a = v1.create_namespaced_config_map(
        "py", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="a", labels={"k": "1"}), data={"x": "y"})
    )
    assert a.metadata.uid and a.metadata.resource_version, a.metadata
    rv = a.metadata.resource_version

    v1.create_namespaced_config_map("py", {"metadata": {"name": "b"}, "data": {"x": "0"}})
    # (The client patches with strategic merge, which comes with the kubectl-fidelity
    # issue; a read-modify-replace exercises the same watch path.)
    b = v1.read_namespaced_config_map("b", "py")
    b.data = {"x": "1"}
    v1.replace_namespaced_config_map("b", "py", b)
    v1.delete_namespaced_config_map("a", "py")

    # Resume from a resourceVersion: exactly the changes after it, in order.
    seen = []
    w = watch.Watch()
    for ev in w.stream(v1.list_namespaced_config_map, "py", resource_version=rv, timeout_seconds=10):
        seen.append((ev["type"], ev["object"].metadata.name, ev["object"].data))
        if len(seen) == 3:
            w.stop()
    assert [s[:2] for s in seen] == [("ADDED", "b"), ("MODIFIED", "b"), ("DELETED", "a")], seen
    assert seen[1][2] == {"x": "1"}, seen

    # No resourceVersion: the current objects first, as ADDED events.
    first = None
    for ev in w.stream(v1.list_namespaced_config_map, "py", timeout_seconds=10):
        first = (ev["type"], ev["object"].metadata.name)
        w.stop()
    assert first == ("ADDED", "b"), first

    # Selectors, and errors as ApiException with the HTTP status.
    assert [c.metadata.name for c in v1.list_namespaced_config_map("py", label_selector="k=1").items] == []
    try:
        v1.read_namespaced_config_map("nope", "py")
        raise AssertionError("expected 404")
    except client.ApiException as e:
        assert e.status == 404, e
    try:
        v1.create_namespaced_config_map("py", {"metadata": {"name": "b"}})
        raise AssertionError("expected 409")
    except client.ApiException as e:
        assert e.status == 409, e

    d = apps.create_namespaced_deployment(
        "py",
        {
            "metadata": {"name": "d"},
            "spec": {
                "selector": {"matchLabels": {"app": "d"}},
                "template": {
                    "metadata": {"labels": {"app": "d"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
                },
            },
        },
    )
    assert d.spec.replicas == 1 and d.spec.strategy.type == "RollingUpdate", d.spec
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1])
