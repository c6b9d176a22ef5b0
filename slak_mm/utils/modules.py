"""Finding a submodule by its dotted path (plain torch).

One rule for every option that names a module: the sparse-training
``module_path`` and the ERF tool's ``layer``.
"""

import difflib
from typing import Optional

import torch.nn as nn


class SubmoduleNotFoundError(AttributeError, KeyError):
    """A dotted path that names no submodule.

    An ``AttributeError`` (what ``nn.Module.get_submodule`` raises) and a
    ``KeyError`` (a failed lookup) at once, so callers that catch either
    keep working.
    """

    def __str__(self) -> str:
        # KeyError would print the repr of the message.
        return str(self.args[0]) if self.args else ''


def resolve_module(
    model: nn.Module, path: Optional[str], option: str = 'path'
) -> nn.Module:
    """Finds a submodule by dotted path, e.g. ``'backbone'``.

    Integer parts index an ``nn.Sequential`` or ``nn.ModuleList`` and may
    be negative: ``'backbone.stages.-1'`` is the last stage.

    Args:
        model (nn.Module): The module to search from.
        path (str, optional): Dotted path; None or ``''`` is ``model``
            itself.
        option (str): What the caller calls the path (e.g.
            ``'module_path'``), for the error message.

    Returns:
        nn.Module: The submodule.

    Raises:
        SubmoduleNotFoundError: If a part of the path names no submodule
            or indexes out of range; the message names the path, the part
            and the submodules there (closest names first).
    """
    if not path:
        return model
    module = model
    for part in path.split('.'):
        if part.lstrip('-').isdigit() and isinstance(
            module, (nn.Sequential, nn.ModuleList)
        ):
            index = int(part)
            if not -len(module) <= index < len(module):
                raise SubmoduleNotFoundError(
                    f'{option} {path!r}: index {index} out of range for '
                    f'{type(module).__name__} of length {len(module)}'
                )
            module = module[index]
            continue
        child = getattr(module, part, None)
        if not isinstance(child, nn.Module):
            raise SubmoduleNotFoundError(
                f'{option} {path!r}: {type(module).__name__} has no '
                f'submodule {part!r}{_known_children(module, part)}; set '
                f'{option} to a dotted attribute path from '
                f'{type(model).__name__}'
            )
        module = child
    return module


def _known_children(module: nn.Module, part: str) -> str:
    names = [name for name, _ in module.named_children()]
    if not names:
        return ' (it has none)'
    close = difflib.get_close_matches(part, names, n=len(names), cutoff=0.5)
    ordered = close + [name for name in names if name not in close]
    return f' (it has {", ".join(repr(name) for name in ordered)})'
