"""Every use of ``grad-cam`` (``pytorch_grad_cam``) internals, in one place (pinned: grad-cam==1.5.7).

The public API (the CAM classes, ``cam(input_tensor=..., targets=...)``,
``ClassifierOutputTarget``) is used by :mod:`nnsens_core.saliency.cam`; what it relies on beyond
that sits here, and ``tests/test_adapters.py`` checks it on the installed version:

* ``cam.activations_and_grads`` (``ActivationsAndGradients``): its ``handles`` list of forward-hook
  handles, its ``save_activation`` / ``save_gradient`` forward hooks, its ``activations`` list and
  ``release()`` (clears the lists, removes every handle in ``handles``). :func:`make_cam` swaps the
  package's hooks for thread-local ones (:func:`nnsens_core._hooks.add_forward_hook`): the package's
  own hooks would also record other sessions' forward passes through the shared model.
* ``BaseCAM.get_cam_weights(input_tensor, target_layer, targets, activations, grads)`` and the
  ``model`` / ``device`` attributes, which :func:`score_cam_class` overrides / reads to batch
  ScoreCAM's masked forward passes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._batching import map_batches
from .._hooks import add_forward_hook

PINNED = "grad-cam==1.5.7"
"""The version whose internals this module was written against (requirements.txt)."""


def make_cam(cam_cls, net: nn.Module, layer: nn.Module):
    """A grad-cam object for ``layer`` whose activation/gradient hooks act only in this thread.
    Always pair with :func:`release_cam` (``try/finally``)."""
    cam = cam_cls(model=net, target_layers=[layer])
    aag = cam.activations_and_grads
    for handle in aag.handles:
        handle.remove()
    aag.handles = [add_forward_hook(layer, aag.save_activation),
                   add_forward_hook(layer, aag.save_gradient)]
    return cam


def release_cam(cam) -> None:
    """Remove the hooks of a :func:`make_cam` object and drop the activations it recorded."""
    cam.activations_and_grads.release()


def recorded_activations(cam) -> list:
    """The activations the CAM object's hooks recorded since its last pass (tests use it)."""
    return cam.activations_and_grads.activations


def score_cam_class():
    """The package's ``ScoreCAM`` with a chosen ``batch_size`` for its masked forward passes and
    no tqdm bars (same weights: softmax over channels of the target score of the masked inputs)."""
    from pytorch_grad_cam import ScoreCAM

    class BatchedScoreCAM(ScoreCAM):
        """The package's ScoreCAM weights, computed with a chosen batch size and no tqdm bars."""
        batch_size = 64

        def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):
            with torch.no_grad():
                act = torch.as_tensor(activations).to(self.device)
                up = F.interpolate(act, size=input_tensor.shape[-2:], mode="bilinear",
                                   align_corners=True)  # = nn.UpsamplingBilinear2d
                flat = up.flatten(2)
                mx, mn = flat.max(-1)[0][..., None, None], flat.min(-1)[0][..., None, None]
                up = (up - mn) / (mx - mn + 1e-8)
                n, k = up.shape[:2]
                scores = torch.empty(n, k)
                for i, target in enumerate(targets):
                    xi = input_tensor[i].detach()
                    scores[i] = map_batches(
                        lambda sl: target(self.model(xi[None] * up[i, sl, None])).float(),
                        k, self.batch_size)
                return torch.softmax(scores, dim=-1).numpy()

    return BatchedScoreCAM
