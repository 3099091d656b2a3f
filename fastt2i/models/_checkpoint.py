"""Loading weights into any family's networks, with clear errors.

Every family declares a :class:`CheckpointLayout`: where each of its networks and optimisers
sit in a training-state file, and which key prefixes identify a plain state dict of each
network.  :func:`register_layout` makes a layout known, so that a file of another family is
recognised and named in the error instead of a long list of mismatched keys.

DF-GAN's layout (in ``fastt2i.models.dfgan``) is the official training state::

    CheckpointLayout(family="dfgan", title="DF-GAN",
                     networks={"netG": ("model", "netG"), "netD": ("model", "netD"), "netC": ("model", "netC")},
                     optimizers={"G": ("optimizers", "optimizer_G"), "D": ("optimizers", "optimizer_D")},
                     classes={"netG": NetG, "netD": NetD, "netC": NetC}, model_class=DFGAN,
                     signatures={"netG": ("fc.", "GBlocks.", "to_rgb."), ...})

:func:`load_weights` takes a path or a loaded object and fills the family's whole model (a
module with one attribute per network), one of its networks, or any other module from a plain
state dict; ``module.`` prefixes of DDP-saved files are removed; any mismatch raises
:class:`StateDictMismatchError` listing the missing, unexpected and mis-shaped keys.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from torch import nn


class StateDictMismatchError(ValueError):
    """A state dict does not fit the model: lists missing / unexpected / mis-shaped keys."""


class FamilyMismatchError(ValueError):
    """A checkpoint of one family was given where another family's was expected."""


@dataclass(frozen=True)
class CheckpointLayout:
    """Where a family keeps its networks and optimisers in a training-state file.

    family      registry name ("dfgan"); fastt2i checkpoints also record it under ``fastt2i.family``.
    title       the family's name for people ("DF-GAN").
    networks    network name -> key path in the training state, e.g. ``{"netG": ("model", "netG")}``;
                the family's whole model has one attribute per network name.
    optimizers  optimiser name -> key path, e.g. ``{"G": ("optimizers", "optimizer_G")}``.
    classes     network name -> its module class (a training state loads into one network by type).
    model_class the module holding all networks (``DFGAN``), or None.
    signatures  network name -> key prefixes that together identify a plain state dict of it
                (every prefix must start some key), used to name the family of a foreign file.
    """

    family: str
    title: str
    networks: dict
    optimizers: dict = field(default_factory=dict)
    classes: dict = field(default_factory=dict)
    model_class: type | None = None
    signatures: dict = field(default_factory=dict)

    def describe(self) -> str:
        """The training-state shape in words, e.g. ``{'model': {'netG', 'netD', 'netC'}}``."""
        nested, flat = {}, []
        for path in self.networks.values():
            if len(path) > 1:
                nested.setdefault(path[0], []).append(repr(path[-1]))
            else:
                flat.append(repr(path[0]))
        return "{" + ", ".join(flat + [f"'{k}': {{{', '.join(v)}}}" for k, v in nested.items()]) + "}"

    def networks_in(self, obj, complete: bool = True) -> dict | None:
        """network name -> state dict when ``obj`` has this family's training-state structure, else None.

        ``complete=False`` also accepts a training state lacking some networks (those are left out).
        """
        if not isinstance(obj, dict):
            return None
        out, structured = {}, False
        for name, path in self.networks.items():
            node = obj
            for depth, key in enumerate(path):
                if not isinstance(node, dict) or key not in node:
                    node = None
                    break
                node = node[key]
                structured |= depth == 0 and len(path) > 1 and isinstance(node, dict)
            if node is not None:
                out[name] = node
        if len(out) == len(self.networks) or (not complete and structured):
            return out
        return None

    def signature_of(self, state) -> str | None:
        """The network name whose key prefixes all occur in the plain state dict ``state``."""
        if not isinstance(state, dict) or not state:
            return None
        keys = list(strip_module_prefix(state))
        for name, prefixes in self.signatures.items():
            if prefixes and all(any(isinstance(k, str) and k.startswith(p) for k in keys) for p in prefixes):
                return name
        return None


_LAYOUTS: dict[str, CheckpointLayout] = {}


def register_layout(layout: CheckpointLayout) -> CheckpointLayout:
    """Make a family's checkpoint layout known (called once by the family's model module)."""
    _LAYOUTS[layout.family] = layout
    return layout


def layouts() -> dict[str, CheckpointLayout]:
    return dict(_LAYOUTS)


def fastt2i_family(obj) -> str | None:
    """The family a fastt2i checkpoint records (None for official files)."""
    meta = obj.get("fastt2i") if isinstance(obj, dict) else None
    return meta.get("family") if isinstance(meta, dict) else None


def identify(obj) -> tuple[CheckpointLayout, str | None] | None:
    """(layout, network name or None for a whole training state) of a loaded file, or None."""
    family = fastt2i_family(obj)
    if family in _LAYOUTS:
        return _LAYOUTS[family], None
    for layout in _LAYOUTS.values():
        if layout.networks_in(obj) is not None:
            return layout, None
    for layout in _LAYOUTS.values():
        name = layout.signature_of(obj.get("state_dict", obj) if isinstance(obj, dict) else obj)
        if name is not None:
            return layout, name
    return None


def check_family(obj, layout: CheckpointLayout, what: str, plain: bool = True) -> None:
    """Raise FamilyMismatchError when ``obj`` is recognisably another family's checkpoint.

    ``plain=False`` checks only training states (a plain state dict may be meant for a shared
    module, e.g. the DAMSM text encoder; a mismatch there names its family in the key error).
    """
    found = identify(obj)
    if found is None or found[0].family == layout.family or (found[1] is not None and not plain):
        return
    other, net = found
    # a plain state dict may fit both families (the shared DAMSM text encoder): only a whole
    # training state, or a signature that is not also one of ours, names the other family
    if net is not None and layout.signature_of(obj.get("state_dict", obj)) is not None:
        return
    kind = f"{other.title}'s {net}" if net else f"a {other.title} checkpoint"
    raise FamilyMismatchError(f"{what}: this is {kind} (family '{other.family}'), not a {layout.title} "
                              f"one (family '{layout.family}'); use the '{other.family}' family for it")


def strip_module_prefix(state: dict) -> dict:
    """Remove DDP/DataParallel's ``module.`` prefix (the official ``load_model_weights``)."""
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def _foreign_hint(state: dict) -> str | None:
    found = identify(state)
    if found is None or found[1] is None:
        return None
    layout, net = found
    return f"  (the keys are those of {layout.title}'s {net}: a '{layout.family}' file)"


def load_state_dict_checked(module: nn.Module, state: dict, what: str = "model") -> nn.Module:
    """Strict load with a clear error listing missing, unexpected and mis-shaped keys."""
    if not isinstance(state, dict):
        raise TypeError(f"{what}: expected a state dict, got {type(state).__name__}")
    state = strip_module_prefix(state)
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(state)
                    if hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or shapes:
        lines = [f"{what}: the state dict does not match {type(module).__name__}"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {missing}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {unexpected}")
        if shapes:
            lines.append(f"  shape mismatches ({len(shapes)}): {shapes}")
        hint = _foreign_hint(state) if missing and unexpected else None
        lines.append(hint or "  (check the image size, channel widths and vocabulary size against the checkpoint)")
        raise StateDictMismatchError("\n".join(lines))
    module.load_state_dict(state)
    return module


def read_weights(source, what: str):
    """A path (read on the CPU, with clear errors) or an already loaded object, unchanged."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{what}: file not found: {path}")
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - torch.load raises many types for bad files
            raise ValueError(f"{what}: cannot read {path} as a PyTorch file ({type(exc).__name__}: {exc})") from exc
    return source


def load_weights(model: nn.Module, source, layout: CheckpointLayout, what: str = "load_weights") -> nn.Module:
    """Load a family's weights into ``model`` (in place; returns it).

    ``source`` is a path or a loaded object:
    - the family's training state (official or fastt2i) into the whole model (``layout.model_class``)
      or into one network (chosen by ``layout.classes``);
    - a plain state dict of one network (``{'state_dict': ...}`` wrappers too) into that module.
    A file of another registered family raises FamilyMismatchError naming both families.
    """
    obj = read_weights(source, what)
    if not isinstance(obj, dict):
        raise TypeError(f"{what}: expected a dict or a path to one, got {type(obj).__name__}")
    nets = layout.networks_in(obj, complete=False)
    if nets is None or (fastt2i_family(obj) not in (None, layout.family)):
        check_family(obj, layout, what, plain=False)
    is_model = layout.model_class is not None and isinstance(model, layout.model_class)
    if is_model and nets is None:
        raise ValueError(f"{what}: a {type(model).__name__} needs the {layout.title} training state file "
                         f"{layout.describe()}; got a plain state dict with keys {sorted(obj)[:8]}...")
    if nets is not None:
        if is_model:
            wanted = list(layout.networks)
        else:
            name = next((n for n, cls in layout.classes.items() if type(model) is cls), None)
            if name is None:
                allowed = ", ".join(c.__name__ for c in ([layout.model_class] if layout.model_class else [])
                                    + list(layout.classes.values()))
                raise TypeError(f"{what}: a {layout.title} training state file loads into {allowed}, "
                                f"not {type(model).__name__}")
            wanted = [name]
        for name in wanted:
            if name not in nets:
                raise StateDictMismatchError(f"{what}: the file has no '{name}' (found {sorted(nets)})")
            load_state_dict_checked(getattr(model, name) if is_model else model, nets[name], name)
        return model
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    return load_state_dict_checked(model, obj, type(model).__name__)
