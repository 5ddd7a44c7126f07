"""ATen op decompositions for the torch.export frontend, one module per op family; importing this
package registers them all in ``registry.ATEN_OPS``."""

from portc.compiler.frontends.torch_ops import (  # noqa: F401
    elementwise,
    nn,
    reduce,
    tensor,
)
