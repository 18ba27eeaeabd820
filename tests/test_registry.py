"""Registries: decorator registration, creation, errors, and entry-point plugins."""

import sys
import textwrap

import pytest

import metakit
from metakit.errors import MetakitError
from metakit.registry import Registry


def test_decorator_registers_and_create_passes_kwargs():
    registry = Registry("widget", "metakit.test-widgets")

    @registry.register("box")
    class Box:
        def __init__(self, size=1):
            self.size = size

    assert registry.names() == ["box"]
    assert registry.create("box", size=3).size == 3


def test_unknown_name_lists_known_names_and_closest_match():
    with pytest.raises(MetakitError) as error:
        metakit.create_backbone("conv5")
    message = str(error.value)
    assert "Did you mean 'conv4'?" in message
    assert "conv4-strided" in message and "mlp" in message
    assert "\n" not in message


def test_duplicate_name_is_an_error():
    registry = Registry("widget", "metakit.test-widgets")
    registry.register("box")(dict)
    with pytest.raises(MetakitError, match="registered twice"):
        registry.register("box")(list)


def test_builtins_are_registered():
    assert {"maml", "fomaml"} <= set(metakit.list_algorithms())
    assert {"conv4", "conv4-strided", "mlp"} <= set(metakit.list_backbones())
    assert "sinusoid" in metakit.list_samplers()


def _install_plugin(root, package, group, name, body):
    """An installed distribution as pip leaves it: the module and a dist-info with entry points."""
    (root / f"{package}.py").write_text(textwrap.dedent(body))
    info = root / f"{package}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{name} = {package}:factory\n")


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for module in [m for m in sys.modules if m.startswith("toy_plugin")]:
        del sys.modules[module]


def test_entry_point_plugin_is_loaded_lazily_by_name(plugin_path):
    _install_plugin(
        plugin_path,
        "toy_plugin_backbone",
        "metakit.backbones",
        "toy-mlp",
        """
        import metakit

        def factory(**kwargs):
            return metakit.MLP(hidden=(3,), **kwargs)
        """,
    )
    registry = Registry("backbone", "metakit.backbones")
    assert "toy_plugin_backbone" not in sys.modules
    backbone = registry.create("toy-mlp", num_outputs=2)
    assert isinstance(backbone, metakit.Backbone) and backbone.head.out_features == 2
    assert "toy-mlp" in registry.names()


def test_entry_point_plugin_that_reuses_a_builtin_name_is_refused(plugin_path):
    _install_plugin(plugin_path, "toy_plugin_clash", "metakit.widgets", "box", "factory = dict\n")
    registry = Registry("widget", "metakit.widgets")
    registry.register("box")(list)
    with pytest.raises(MetakitError, match="registered twice"):
        registry.get("box")


def test_broken_plugin_names_itself(plugin_path):
    _install_plugin(plugin_path, "toy_plugin_broken", "metakit.widgets", "bad", "import no_such_module\n")
    registry = Registry("widget", "metakit.widgets")
    with pytest.raises(MetakitError, match="widget plugin 'bad' .* failed to import"):
        registry.get("bad")
