"""The three VGG16 transfer-learning models of docs/models.md (Keras 2 via tf_keras).

Every model takes uint8 grayscale images [S, S, 1] and does the VGG16 preprocessing itself
(so it runs on the accelerator), then:

    image (uint8) -> vgg16 (nested model: preprocess + VGG16 without top) -> head -> 16 softmax

- model1: head Conv2D(32, 3x3) -> MaxPool(2x2) -> Flatten -> FC1(512) -> FC2(256) -> predictions.
- model2: head conv_fc1 (Conv2D(128, k x k), k = VGG feature map size) -> conv_fc2 (Conv2D(64, 1x1))
  -> Flatten -> predictions.
- model3: model2 with the last 6 VGG16 layers trainable (fine-tuned at a smaller learning rate:
  see `compile_model`).

`build_model` returns a `TransferModel`: a functional model whose `train_step` can apply a
separate optimizer to the trainable VGG16 variables. The class is registered, so
`model.save(path)` / `keras.models.load_model(path)` (safe mode) work once trainer.models is
imported.
"""
import tensorflow as tf
import tf_keras as keras

from tfrecords_tool import filesystems
from trainer.augment import augmentation

MODEL_NAMES = ("model1", "model2", "model3")
BACKBONE = "vgg16"  # name of the nested model: uint8 image -> VGG16 feature map
# Model 3 fine-tunes the last 6 layers of VGG16 (without top).
MODEL3_TRAINABLE_VGG_LAYERS = (
    "block4_conv3", "block4_pool", "block5_conv1", "block5_conv2", "block5_conv3", "block5_pool",
)
_VGG_MEAN_BGR = (103.939, 116.779, 123.68)  # keras.applications.vgg16.preprocess_input ("caffe")


@keras.saving.register_keras_serializable(package="trainer")
class VGGPreprocess(keras.layers.Layer):
    """uint8 grayscale [..., 1] -> VGG16 input: 3 channels, BGR, ImageNet mean subtracted.

    Same values as `vgg16.preprocess_input(tf.repeat(float_image, 3, axis=-1))`; the output has
    the layer's compute dtype (float16/bfloat16 under a mixed precision policy). No weights.
    """

    def call(self, inputs):
        x = tf.repeat(tf.cast(inputs, tf.float32), 3, axis=-1)[..., ::-1]  # RGB -> BGR
        x = x - tf.constant(_VGG_MEAN_BGR, dtype=tf.float32)
        return tf.cast(x, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)[:-1].concatenate([3])


@keras.saving.register_keras_serializable(package="trainer")
class TransferModel(keras.Model):
    """Functional model whose trainable VGG16 variables can get their own optimizer.

    `compile(optimizer, backbone_optimizer=None, ...)`: without `backbone_optimizer` this is a
    plain keras Model. With it, `train_step` applies `backbone_optimizer` to the trainable
    variables of the nested `vgg16` model and `optimizer` to all others (the head). Under a
    mixed_float16 policy both optimizers are LossScaleOptimizers and each scales the loss and
    skips non-finite steps on its own. Both are tracked attributes (`optimizer`,
    `backbone_optimizer`), so `tf.train.Checkpoint(model=...)` and BackupAndRestore save them.
    """

    def compile(self, optimizer="rmsprop", backbone_optimizer=None, **kwargs):
        super().compile(optimizer=optimizer, **kwargs)
        if backbone_optimizer is not None:
            backbone_optimizer = keras.optimizers.get(backbone_optimizer)
            if self.dtype_policy.name == "mixed_float16" and not isinstance(
                backbone_optimizer, keras.mixed_precision.LossScaleOptimizer
            ):
                backbone_optimizer = keras.mixed_precision.LossScaleOptimizer(backbone_optimizer)
        self.backbone_optimizer = backbone_optimizer

    def train_step(self, data):
        backbone_vars = self.get_layer(BACKBONE).trainable_variables
        # (no class attribute default: Keras does not track attributes that shadow one)
        if getattr(self, "backbone_optimizer", None) is None or not backbone_vars:
            return super().train_step(data)
        backbone_ids = {id(v) for v in backbone_vars}
        head_vars = [v for v in self.trainable_variables if id(v) not in backbone_ids]
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape(persistent=True) as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x, y, y_pred, sample_weight)
        # minimize() scales the loss on the (persistent) tape and unscales the gradients when
        # the optimizer is a LossScaleOptimizer, and aggregates gradients across replicas.
        self.optimizer.minimize(loss, head_vars, tape=tape)
        self.backbone_optimizer.minimize(loss, backbone_vars, tape=tape)
        del tape
        return self.compute_metrics(x, y, y_pred, sample_weight)


def _vgg16_weights(weights):
    """Maps the `weights` argument to what keras.applications.VGG16 takes (checks paths)."""
    if weights == "imagenet":
        return "imagenet"
    if weights in (None, "none"):
        return None
    if not tf.io.gfile.exists(weights):
        raise ValueError(f"VGG16 weights file {weights!r} does not exist")
    if tf.io.gfile.isdir(weights):
        raise ValueError(f"VGG16 weights file {weights!r} is a directory, not a weights file")
    return weights


def _build_vgg16(inputs, weights, augment_layer=None):
    """Nested model `vgg16`: uint8 image -> [augmentation] -> preprocessing -> VGG16 without top."""
    x = augment_layer(inputs) if augment_layer is not None else inputs
    x = VGGPreprocess(name="preprocess")(x)
    kwargs = dict(include_top=False, input_tensor=x, input_shape=tuple(x.shape[1:]))
    if weights is None:
        return keras.applications.VGG16(weights=None, **kwargs)
    if weights == "imagenet":
        try:
            return keras.applications.VGG16(weights="imagenet", **kwargs)
        except Exception as e:  # noqa: BLE001 - keras raises a bare Exception when offline
            raise ValueError(
                f"could not get the ImageNet VGG16 weights ({e}); without internet pass the path"
                " of vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 as weights, or put that"
                " file in ~/.keras/models/") from e
    with filesystems.local_file(weights) as local:  # h5py reads local files only
        try:
            return keras.applications.VGG16(weights=local, **kwargs)
        except Exception as e:  # noqa: BLE001 - h5py/keras raise many kinds; report them alike
            raise ValueError(
                f"VGG16 weights file {weights!r} does not fit VGG16 without top (expected the 13"
                " conv layers of vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 or a"
                f" .weights.h5 of keras.applications.VGG16(include_top=False)): "
                f"{type(e).__name__}: {e}") from e


def check_name_and_size(name, image_size):
    """Raises ValueError for an unknown model name or an image size too small for the model."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}: expected one of {', '.join(MODEL_NAMES)}")
    min_size = 128 if name == "model1" else 32
    if image_size < min_size:
        raise ValueError(
            f"{name} needs image_size >= {min_size} (VGG16 feature map is image_size // 32 = "
            f"{image_size // 32} per side"
            + (", too small for its 3x3 conv + 2x2 pool head)" if name == "model1" else ")")
            + f"; got image_size={image_size}"
        )


def build_model(name, image_size=224, num_classes=16, weights="imagenet", augment="none", seed=None):
    """Builds model1/model2/model3 for uint8 [image_size, image_size, 1] input.

    augment: none/light/strong training-only document augmentation (trainer.augment), placed
    inside the nested `vgg16` model before the preprocessing so that it runs on the accelerator.

    weights: "imagenet" (Keras download), "none" (random init) or the path of a VGG16-without-top
    weights file (.h5 / .weights.h5). Raises ValueError for an unknown name, a too small image
    size, or a weights file that is missing or does not fit. Set the global mixed precision
    policy before calling; the softmax output is float32 in any case.
    """
    check_name_and_size(name, image_size)
    inputs = keras.Input((image_size, image_size, 1), dtype="uint8", name="image")
    vgg = _build_vgg16(keras.Input((image_size, image_size, 1), dtype="uint8"),
                       _vgg16_weights(weights), augmentation(augment, seed))
    vgg.trainable = name == "model3"
    for layer in vgg.layers:
        layer.trainable = name == "model3" and layer.name in MODEL3_TRAINABLE_VGG_LAYERS
    x = vgg(inputs)
    if name == "model1":
        x = keras.layers.Conv2D(32, 3, activation="relu", name="conv_head")(x)
        x = keras.layers.MaxPooling2D(2, name="pool_head")(x)
        x = keras.layers.Flatten(name="flatten")(x)
        x = keras.layers.Dense(512, activation="relu", name="FC1")(x)
        x = keras.layers.Dense(256, activation="relu", name="FC2")(x)
    else:
        x = keras.layers.Conv2D(128, image_size // 32, activation="relu", name="conv_fc1")(x)
        x = keras.layers.Conv2D(64, 1, activation="relu", name="conv_fc2")(x)
        x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="predictions")(x)
    return TransferModel(inputs, outputs, name=name)


def compile_model(model, head_optimizer, backbone_optimizer=None,
                  loss="sparse_categorical_crossentropy", metrics=("accuracy",), **kwargs):
    """Compiles `model`: `head_optimizer` for the head, `backbone_optimizer` (e.g. Adam 1e-5)
    for the trainable VGG16 layers of model3 (default: head_optimizer for everything).

    Each optimizer must be its own instance (an optimizer is built for one set of variables).
    Plain keras Models (e.g. the head of `split_backbone_head`) take no backbone_optimizer.
    """
    if backbone_optimizer is not None:
        if not isinstance(model, TransferModel):
            raise ValueError(f"{model.name} is not a TransferModel: it takes no backbone_optimizer")
        kwargs["backbone_optimizer"] = backbone_optimizer
    model.compile(optimizer=head_optimizer, loss=loss, metrics=list(metrics), **kwargs)
    return model


def parameter_counts(model):
    """(total, trainable) numbers of parameters."""
    trainable = sum(int(tf.size(w)) for w in model.trainable_weights)
    return trainable + sum(int(tf.size(w)) for w in model.non_trainable_weights), trainable


def split_backbone_head(model):
    """(backbone, head) sharing `model`'s layers and weights, for a cache of VGG16 features.

    backbone: uint8 image -> VGG16 feature map (the nested `vgg16` model itself);
    head: feature map -> class probabilities (the head layers called on a new Input).
    Training `head` trains `model`.
    """
    backbone = model.get_layer(BACKBONE)
    index = model.layers.index(backbone)
    features = keras.Input(backbone.output_shape[1:], name="features")
    x = features
    for layer in model.layers[index + 1:]:
        x = layer(x)
    return backbone, keras.Model(features, x, name=f"{model.name}_head")

