"""The nodes in ComfyUI's V3 schema (``comfy_api.latest``: ``io.ComfyNode``, ``ComfyExtension``).

Each V3 class is made from the V1 class of the same node id: its schema from the V1 ``INPUT_TYPES``,
``RETURN_TYPES``, names and tooltips (so both describe the same inputs, defaults, sliders and dropdowns);
``execute`` runs the V1 method, ``fingerprint_inputs`` is ``IS_CHANGED`` and ``validate_inputs`` is
``VALIDATE_INPUTS``. The behaviour is the V1 one by construction.

ComfyUI's loader registers a pack's ``NODE_CLASS_MAPPINGS`` or, when it has none, its
``comfy_entrypoint``, never both; the pack's ``__init__.py`` chooses (V1 by default, V3 with
``EMBEDDING_SANITIZER_V3=1`` on a host that has ``comfy_api.latest``; README "Nodes").
"""
from __future__ import annotations

from . import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

_OPTION_NAMES = {"default", "min", "max", "step", "tooltip", "multiline"}


def available() -> bool:
    try:
        import comfy_api.latest  # noqa: F401
    except ImportError:
        return False
    return True


def _input(io, name: str, spec, optional: bool):
    kind, options = spec[0], dict(spec[1]) if len(spec) > 1 else {}
    common = {"optional": optional, "tooltip": options.get("tooltip")}
    if isinstance(kind, (list, tuple)):
        return io.Combo.Input(name, options=list(kind), default=options.get("default"), **common)
    if kind == "FLOAT":
        display = io.NumberDisplay.slider if options.get("display") == "slider" else None
        return io.Float.Input(name, default=options.get("default"), min=options.get("min"), max=options.get("max"),
                              step=options.get("step"), display_mode=display, **common)
    if kind == "INT":
        return io.Int.Input(name, default=options.get("default"), min=options.get("min"), max=options.get("max"),
                            step=options.get("step"), **common)
    if kind == "BOOLEAN":
        return io.Boolean.Input(name, default=options.get("default"), **common)
    if kind == "STRING":
        return io.String.Input(name, default=options.get("default"), multiline=bool(options.get("multiline")),
                               **common)
    types = {"CLIP": io.Clip, "CONDITIONING": io.Conditioning, "IMAGE": io.Image}
    if kind in types:
        return types[kind].Input(name, **common)
    raise TypeError(f"no V3 input type for {kind!r} ({name})")


def _output(io, kind: str, name: str, tooltip: str | None):
    types = {"CLIP": io.Clip, "CONDITIONING": io.Conditioning, "IMAGE": io.Image, "STRING": io.String}
    return types[kind].Output(display_name=name, tooltip=tooltip)


def v3_class(node_id: str, v1):
    """The V3 ``io.ComfyNode`` for the V1 class ``v1``."""
    from comfy_api.latest import io

    def define_schema(cls):
        spec = v1.INPUT_TYPES()
        inputs = [_input(io, name, value, False) for name, value in spec.get("required", {}).items()]
        inputs += [_input(io, name, value, True) for name, value in spec.get("optional", {}).items()]
        tooltips = getattr(v1, "OUTPUT_TOOLTIPS", (None,) * len(v1.RETURN_TYPES))
        outputs = [_output(io, kind, name, tip) for kind, name, tip in zip(v1.RETURN_TYPES, v1.RETURN_NAMES, tooltips)]
        hidden = [io.Hidden.unique_id] if "unique_id" in spec.get("hidden", {}) else []
        return io.Schema(node_id=node_id, display_name=NODE_DISPLAY_NAME_MAPPINGS[node_id], category=v1.CATEGORY,
                         description=v1.DESCRIPTION, inputs=inputs, outputs=outputs, hidden=hidden,
                         is_output_node=bool(getattr(v1, "OUTPUT_NODE", False)))

    def execute(cls, **kwargs):
        if "unique_id" in v1.INPUT_TYPES().get("hidden", {}):
            kwargs["unique_id"] = cls.hidden.unique_id
        result = getattr(v1(), v1.FUNCTION)(**kwargs)
        if isinstance(result, dict):
            return io.NodeOutput(*result.get("result", ()), ui=result.get("ui"))
        return io.NodeOutput(*result)

    members = {"__doc__": f"V3 schema of {node_id} (made from the V1 class).", "__module__": __name__,
               "define_schema": classmethod(define_schema), "execute": classmethod(execute)}
    if hasattr(v1, "IS_CHANGED"):
        members["fingerprint_inputs"] = classmethod(lambda cls, **kwargs: v1.IS_CHANGED(**kwargs))
    if hasattr(v1, "VALIDATE_INPUTS"):
        def validate_inputs(cls, weights):  # the only input the V1 classes validate themselves
            return v1.VALIDATE_INPUTS(weights)

        members["validate_inputs"] = classmethod(validate_inputs)
    return type(f"{v1.__name__}V3", (io.ComfyNode,), members)


def node_list() -> list:
    return [v3_class(node_id, v1) for node_id, v1 in NODE_CLASS_MAPPINGS.items()]


async def comfy_entrypoint():
    """The ``ComfyExtension`` that lists the V3 nodes (ComfyUI awaits this)."""
    from comfy_api.latest import ComfyExtension

    nodes = node_list()

    class EmbeddingSanitizerExtension(ComfyExtension):
        async def get_node_list(self):
            return nodes

    return EmbeddingSanitizerExtension()
