"""Per-unit gradients (one per slice, or one per patient) in one backward pass, without Opacus' hooks.

DP-SGD needs, for every privacy unit u of a step (a slice at slice level, a patient at
patient level), the gradient of that unit's share of the loss, G_u = sum_{i in u} g_i with
g_i = d loss_i / d theta. This module computes every G_u exactly, for models whose
trainable parameters all sit in ``Conv2d`` (``groups=1``, zero padding), ``GroupNorm`` and
``Linear`` layers (what :mod:`models` builds); :func:`supports_unit_gradients` says whether a model
qualifies, and :mod:`dp.training` falls back to Opacus' ``GradSampleModule`` when it does not.

How. A forward hook keeps each parametrised layer's input x_l and output y_l. One
``torch.autograd.grad(loss, [y_l])`` gives the back-propagated b_l = d loss / d y_l for every
layer: autograd then computes the activation gradients only, never the (summed) weight
gradients that a plain ``loss.backward()`` and Opacus' hooks mode both compute and then
throw away. With the loss a mean over the B records of the batch,
loss = (1/B) sum_i loss_i, the record-i part of B * b_l is d loss_i / d y_l, and each
layer's parameter gradient is linear in it:

* ``Linear``: G_u[W] = sum_{i in u} (B b_i)^T x_i, G_u[b] = sum_{i in u} sum_t B b_i;
* ``GroupNorm``: G_u[gamma] = sum_{i in u} sum_hw B b_i * xhat_i (xhat: x_i normalised
  per group, recomputed), G_u[beta] = sum_{i in u} sum_hw B b_i;
* ``Conv2d``: G_u[W] = sum_{i in u} dW(x_i, B b_i), dW the convolution's weight gradient
  of one record, computed in one of three exact forms, whichever is cheap for the layer's
  shape (:func:`_conv2d`): torch's own weight-gradient kernel run once per unit on the
  unit's records (the sum over a unit's records is then the kernel's own reduction); a
  grouped convolution with one group per record (torch's expanded weights; Goodfellow
  2015, Rochette et al. 2019) where a side has very few channels; a batched matrix
  product for 1 x 1 convolutions.

A layer called more than once in a loss (e.g. an encoder applied twice) adds each call's
share; a call under ``torch.no_grad()`` (a fixed target) contributes nothing, as in autograd.
Every call must carry the batch's B records in order (row i of every call is record i),
which is the same assumption Opacus makes; a call with another leading size is refused.
"""

from __future__ import annotations

__all__ = ["UnitGradients", "supports_unit_gradients"]


def _supported_layer(module) -> bool:
    import torch.nn as nn

    if type(module) is nn.Conv2d:
        return module.groups == 1 and module.padding_mode == "zeros" and isinstance(module.padding, tuple)
    return type(module) in (nn.GroupNorm, nn.Linear)


def _trainable_layers(model) -> list:
    return [m for m in model.modules() if any(p.requires_grad for p in m.parameters(recurse=False))]


def supports_unit_gradients(model) -> bool:
    """True when every trainable parameter of ``model`` is in a layer this module handles."""
    return all(_supported_layer(m) for m in _trainable_layers(model))


class UnitGradients:
    """Hooks on ``model``'s trainable layers; :meth:`compute` gives per-unit gradients of one loss.

    Use as a context manager (the hooks are removed on exit: the model is a plain module again).
    """

    def __init__(self, model) -> None:
        if not supports_unit_gradients(model):
            raise ValueError("model has trainable layers other than Conv2d (groups=1), GroupNorm and Linear")
        self.model = model
        self.layers = _trainable_layers(model)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self._calls: list = []
        self._handles: list = []

    def __enter__(self) -> "UnitGradients":
        for layer in self.layers:
            self._handles.append(layer.register_forward_hook(self._record))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._calls.clear()

    def _record(self, layer, inputs, output) -> None:
        if output.requires_grad:  # a call under no_grad (or on frozen inputs and weights) adds nothing
            self._calls.append((layer, inputs[0].detach(), output))

    def compute(self, loss_fn, batch, owner, units: int):
        """``(per_unit, loss)``: for each trainable parameter, a tensor ``(units, *shape)`` of G_u.

        ``owner[i]`` (a long tensor) is the unit of record i of ``batch``; records of one unit
        need not be adjacent, and every unit has at least one. ``loss_fn(model, batch)`` must be
        the mean over the B records of per-record losses, record i's loss depending on record i only.
        """
        import torch

        size = int(batch.shape[0])
        layout = _Layout(owner, units)
        self._calls.clear()
        try:
            loss = loss_fn(self.model, batch)
            calls = list(self._calls)
        finally:
            self._calls.clear()
        for layer, x, _ in calls:
            if x.shape[0] != size:
                raise ValueError(f"a {type(layer).__name__} call had {x.shape[0]} rows for a batch of {size} "
                                 "records: per-record gradients need row i of every call to be record i")
        _check_parameter_uses(loss, calls, self.params)
        backprops = torch.autograd.grad(loss, [y for _, _, y in calls], allow_unused=True) if calls else []
        grads = {id(p): None for p in self.params}
        with torch.no_grad():  # the per-unit gradients are values, not part of any graph
            for (layer, x, _), b in zip(calls, backprops):
                if b is None:
                    continue
                for param, g in _layer_grads(layer, x, b, layout):
                    if param is not None and param.requires_grad:
                        grads[id(param)] = g if grads[id(param)] is None else grads[id(param)] + g
            for g in grads.values():
                if g is not None:
                    # d loss_i / d y_l is B times record i's part of b_l (the loss is a mean over records);
                    # every form is linear in b_l, so the factor is applied once, to the small results.
                    g.mul_(size)
        per_unit = [grads[id(p)] if grads[id(p)] is not None else torch.zeros((units, *p.shape), dtype=p.dtype)
                    for p in self.params]
        return per_unit, loss


def _check_parameter_uses(loss, calls, params) -> None:
    """Refuse a loss in which a trainable parameter reaches the loss other than through its own layers' calls.

    The per-unit forms see a parameter only through the hooked calls of the layer that owns it. A use
    elsewhere (tied weights, ``F.linear(h, enc.weight.t())``) would be silently missing from G_u, so the
    loss's autograd graph is walked once per step and every edge into a parameter's gradient accumulator is
    counted: each recorded call of its layer accounts for one; any other is refused. (Opacus' hooks are
    wrong on such models too, so there is no exact path to fall back to.) Cost: one walk of the graph's
    nodes, small beside the backward pass."""
    expected: dict = {}
    for layer, _, _ in calls:
        for p in layer.parameters(recurse=False):
            if p.requires_grad:
                expected[id(p)] = expected.get(id(p), 0) + 1
    seen, stack, observed = set(), [loss.grad_fn], {}
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for child, _ in node.next_functions:
            if child is None:
                continue
            variable = getattr(child, "variable", None)  # AccumulateGrad: a leaf's gradient accumulator
            if variable is not None:
                observed[id(variable)] = observed.get(id(variable), 0) + 1
            else:
                stack.append(child)
    for p in params:
        if observed.get(id(p), 0) != expected.get(id(p), 0):
            raise ValueError(
                f"a trainable parameter of shape {tuple(p.shape)} reaches the loss {observed.get(id(p), 0)} "
                f"time(s) but through its own layer's calls {expected.get(id(p), 0)} time(s): per-unit "
                "gradients cannot be exact for a parameter used outside its layer (e.g. tied weights)")


class _Layout:
    """Which records belong to which unit: ``members[u]`` (a slice when unit u's records are adjacent)."""

    def __init__(self, owner, units: int) -> None:
        import torch

        self.owner, self.units = owner, units
        counts = torch.bincount(owner, minlength=units).tolist()
        if len(counts) != units or min(counts, default=1) < 1:
            raise ValueError(f"every unit 0..{units - 1} needs at least one record, and no record another unit")
        adjacent = bool((owner[1:] >= owner[:-1]).all()) if owner.numel() > 1 else True
        if adjacent:
            starts = [0]
            for count in counts:
                starts.append(starts[-1] + count)
            self.members = [slice(a, b) for a, b in zip(starts, starts[1:])]
        else:
            self.members = [torch.nonzero(owner == u).flatten() for u in range(units)]
        self.one_each = units == owner.numel() and bool((owner == torch.arange(units)).all())

    def sum_rows(self, t):
        """Per-unit sums of per-record rows ``t`` (B, ...) -> (units, ...)."""
        import torch

        if self.one_each:
            return t  # one record per unit, in order: nothing to sum
        out = torch.zeros((self.units, *t.shape[1:]), dtype=t.dtype)
        return out.index_add_(0, self.owner, t)


def _layer_grads(layer, x, b, layout: _Layout):
    import torch.nn as nn

    if isinstance(layer, nn.Conv2d):
        return _conv2d(layer, x, b, layout)
    if isinstance(layer, nn.GroupNorm):
        return _group_norm(layer, x, b, layout)
    return _linear(layer, x, b, layout)


def _linear(layer, x, b, layout):
    import torch

    xs = x.reshape(x.shape[0], -1, x.shape[-1])
    bs = b.reshape(b.shape[0], -1, b.shape[-1])
    weight = layout.sum_rows(torch.einsum("nto,nti->noi", bs, xs))
    bias = layout.sum_rows(bs.sum(1)) if layer.bias is not None else None
    return [(layer.weight, weight), (layer.bias, bias)]


def _group_norm(layer, x, b, layout):
    import torch.nn.functional as F

    out = []
    if layer.weight is not None:
        xhat = F.group_norm(x, layer.num_groups, eps=layer.eps)
        out.append((layer.weight, layout.sum_rows((b * xhat).flatten(2).sum(2))))
    if layer.bias is not None:
        out.append((layer.bias, layout.sum_rows(b.flatten(2).sum(2))))
    return out


def _conv2d(layer, x, b, layout):
    """Per-unit Conv2d gradients, by whichever of three exact forms is cheap for the layer's shape.

    Measured on one CPU thread for compact-ae at 64 x 64, 16 records (issue 20): a loop over
    units of torch's own weight-gradient kernel costs about the summed gradient plus a small
    per-call overhead, except where a side has very few channels (there a grouped
    convolution over the records is about 5x cheaper); 1 x 1 convolutions are one batched product.
    All three give the same numbers up to floating-point rounding.
    """
    import torch
    import torch.nn.functional as F

    size, c_in, c_out = x.shape[0], x.shape[1], b.shape[1]
    kh, kw = layer.kernel_size
    if (kh, kw) == (1, 1) and layer.stride == (1, 1) and layer.padding == (0, 0):
        per_record = torch.bmm(b.flatten(2), x.flatten(2).transpose(1, 2)).view(size, c_out, c_in, 1, 1)
        weight = layout.sum_rows(per_record)
    elif min(c_in, c_out) <= _FEW_CHANNELS:
        # Grouped convolution: batch = input channels, one group per record (torch's expanded weights).
        # (the explicit copy of the transposed input halves oneDNN's time for the 16 -> 1 output layer)
        per_record = F.conv2d(x.transpose(0, 1).contiguous(), b.reshape(size * c_out, 1, *b.shape[2:]), None,
                              stride=layer.dilation, padding=layer.padding, dilation=layer.stride, groups=size)
        per_record = per_record[:, :, :kh, :kw].reshape(c_in, size, c_out, kh, kw).permute(1, 2, 0, 3, 4)
        weight = layout.sum_rows(per_record)
    else:
        weight = torch.stack([
            torch.ops.aten.convolution_backward(
                b[rows], x[rows], layer.weight, None, layer.stride, layer.padding, layer.dilation, False, [0, 0], 1,
                [False, True, False])[1]
            for rows in layout.members])
    bias = layout.sum_rows(b.flatten(2).sum(2)) if layer.bias is not None else None
    return [(layer.weight, weight), (layer.bias, bias)]


#: At most this many input or output channels: the grouped-convolution form (see _conv2d).
_FEW_CHANNELS = 4
