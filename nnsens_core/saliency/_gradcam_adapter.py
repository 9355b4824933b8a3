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
* ``BaseCAM.compute_cam_per_layer(input_tensor, targets, eigen_smooth)``, ``target_layers``,
  ``get_cam_image(...)`` and ``activations_and_grads.gradients``, which :func:`volume_cam_class`
  overrides / reads for volumes. The package's CAM weights and weighted sums are dimension-agnostic
  (5-D activations work), but it upsamples a volume's CAM with ``scipy.ndimage.zoom`` (cubic
  spline, corner-aligned grids), while an image's CAM gets ``cv2.resize`` (bilinear, half-pixel
  centres). The override upsamples volumes trilinearly with half-voxel centres, the 3-D analogue
  of the image path, so a CAM voxel lands where its receptive field is and no spline overshoot
  appears.
"""
from __future__ import annotations

import functools

import numpy as np
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


@functools.cache
def score_cam_class():
    """The package's ``ScoreCAM`` with a chosen ``batch_size`` for its masked forward passes and
    no tqdm bars (same weights: softmax over channels of the target score of the masked inputs);
    on volumes the channel masks are upsampled trilinearly (the package's is 2-D only)."""
    from pytorch_grad_cam import ScoreCAM

    class BatchedScoreCAM(ScoreCAM):
        """The package's ScoreCAM weights, computed with a chosen batch size and no tqdm bars."""
        batch_size = 64

        def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):
            with torch.no_grad():
                act = torch.as_tensor(activations).to(self.device)
                mode = "bilinear" if act.ndim == 4 else "trilinear"   # images / volumes
                up = F.interpolate(act, size=tuple(input_tensor.shape[2:]), mode=mode,
                                   align_corners=True)  # = nn.UpsamplingBilinear2d on images
                flat = up.flatten(2)
                ones = (1,) * (up.ndim - 2)
                mx = flat.max(-1)[0].view(*flat.shape[:2], *ones)
                mn = flat.min(-1)[0].view(*flat.shape[:2], *ones)
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


def upsample_volumes(cams: np.ndarray, size) -> np.ndarray:
    """CAM volumes ``(N, d, h, w)`` -> ``(N, D, H, W)`` float32: each min-max scaled like the
    package's ``scale_cam_image`` (``(c - min) / (max - min + 1e-7)``), then resized trilinearly
    with half-voxel centres (``align_corners=False``, the 3-D analogue of ``cv2.resize``)."""
    c = torch.as_tensor(np.asarray(cams, dtype=np.float32))
    flat = c.flatten(1)
    lo = flat.min(1)[0].view(-1, 1, 1, 1)
    c = c - lo
    c = c / (1e-7 + c.flatten(1).max(1)[0].view(-1, 1, 1, 1))
    up = F.interpolate(c[:, None], size=tuple(int(s) for s in size), mode="trilinear",
                       align_corners=False)
    return up[:, 0].numpy()


_VOLUME_CLASSES: dict[type, type] = {}


def volume_cam_class(cam_cls):
    """``cam_cls`` (a package CAM class) whose CAMs of volumes ``(N, C, D, H, W)`` are upsampled
    by :func:`upsample_volumes` instead of the package's cubic-spline zoom; images take the
    package's own path unchanged. The per-channel weights and the weighted sum are the package's."""
    if cam_cls not in _VOLUME_CLASSES:
        class VolumeCAM(cam_cls):
            def compute_cam_per_layer(self, input_tensor, targets, eigen_smooth):
                if input_tensor.ndim != 5:
                    return super().compute_cam_per_layer(input_tensor, targets, eigen_smooth)
                aag = self.activations_and_grads
                acts = [a.cpu().data.numpy() for a in aag.activations]
                grads = [g.cpu().data.numpy() for g in aag.gradients]
                out = []
                for i, layer in enumerate(self.target_layers):
                    cam = self.get_cam_image(input_tensor, layer, targets,
                                             acts[i] if i < len(acts) else None,
                                             grads[i] if i < len(grads) else None, eigen_smooth)
                    cam = np.maximum(cam, 0)
                    out.append(upsample_volumes(cam, input_tensor.shape[2:])[:, None])
                return out

        VolumeCAM.__name__ = VolumeCAM.__qualname__ = f"Volume{cam_cls.__name__}"
        _VOLUME_CLASSES[cam_cls] = VolumeCAM
    return _VOLUME_CLASSES[cam_cls]
