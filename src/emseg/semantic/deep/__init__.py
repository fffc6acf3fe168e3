"""Deep semantic segmentation: the U-Net family in plain PyTorch, on CPU or GPU.

Networks (:class:`UNet`, 2D / 3D / anisotropic, residual, deep supervision),
training from a YAML / JSON config (:func:`train`, :func:`load_config`),
tiled inference with Gaussian blending in memory (:func:`predict_image`) and
blockwise zarr -> zarr (:func:`predict_blockwise`), ensembles, transfer
learning and the models that ship with emseg. See ``docs/deep.md``.
"""

from emseg.semantic.deep._augment import augment_patch, elastic_field
from emseg.semantic.deep._config import (
    AugmentConfig,
    ConfigError,
    DataConfig,
    LossConfig,
    NetworkConfig,
    OptimiserConfig,
    ScheduleConfig,
    TrainConfig,
    ValidationConfig,
    load_config,
    save_config,
)
from emseg.semantic.deep._data import (
    Intensity,
    PatchSampler,
    affinity_target,
    boundary_target,
    class_positions,
    estimate_intensity,
    make_target,
    map_classes,
)
from emseg.semantic.deep._ensemble import (
    Member,
    majority_vote,
    predict_ensemble,
    predict_members,
    predict_triplanar,
)
from emseg.semantic.deep._infer import (
    Predictor,
    class_map,
    effective_tile,
    predict_blockwise,
    predict_image,
    tta_mode,
)
from emseg.semantic.deep._losses import segmentation_loss, soft_dice_loss
from emseg.semantic.deep._lsd import local_shape_descriptors, n_lsd_channels
from emseg.semantic.deep._model import (
    Model,
    build_network,
    init_from,
    load_tensors,
    resolve_device,
)
from emseg.semantic.deep._networks import (
    LevelPlan,
    UNet,
    anisotropic_plan,
    isotropic_plan,
    receptive_field,
    receptive_interval,
)
from emseg.semantic.deep._registry import (
    ModelCard,
    list_models,
    load_model,
    models_dir,
    resolve_model,
)
from emseg.semantic.deep._tiling import (
    blend_halo,
    gaussian_importance,
    tile_grid,
    tile_starts,
    tiles_for_region,
)
from emseg.semantic.deep._train import TrainResult, evaluate, lr_factor, plot_curves, train

__all__ = [
    "AugmentConfig",
    "ConfigError",
    "DataConfig",
    "Intensity",
    "LevelPlan",
    "LossConfig",
    "Member",
    "Model",
    "ModelCard",
    "NetworkConfig",
    "OptimiserConfig",
    "PatchSampler",
    "Predictor",
    "ScheduleConfig",
    "TrainConfig",
    "TrainResult",
    "UNet",
    "ValidationConfig",
    "affinity_target",
    "anisotropic_plan",
    "augment_patch",
    "blend_halo",
    "boundary_target",
    "build_network",
    "class_map",
    "class_positions",
    "effective_tile",
    "elastic_field",
    "estimate_intensity",
    "evaluate",
    "gaussian_importance",
    "init_from",
    "isotropic_plan",
    "list_models",
    "load_config",
    "load_model",
    "load_tensors",
    "local_shape_descriptors",
    "lr_factor",
    "majority_vote",
    "make_target",
    "map_classes",
    "models_dir",
    "n_lsd_channels",
    "plot_curves",
    "predict_blockwise",
    "predict_ensemble",
    "predict_image",
    "predict_members",
    "predict_triplanar",
    "receptive_field",
    "receptive_interval",
    "resolve_device",
    "resolve_model",
    "save_config",
    "segmentation_loss",
    "soft_dice_loss",
    "tile_grid",
    "tile_starts",
    "tiles_for_region",
    "train",
    "tta_mode",
]
