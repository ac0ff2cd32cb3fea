"""The float layer ops (C++), callable on numpy arrays in Keras layouts."""
from ._core import (  # noqa: F401
    activation,
    batch_norm,
    conv2d,
    dense,
    depthwise_conv2d,
    fold_batch_norm,
    simple_rnn,
)
from ._core import (  # noqa: F401,E402  (backward passes, for training and QAT)
    activation_backward,
    conv2d_backward,
    dense_backward,
    depthwise_conv2d_backward,
    simple_rnn_backward,
)
