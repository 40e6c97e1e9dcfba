"""What the tests import to check re-parameterization: realistic random BN state
(:mod:`mmrepvgg.synthetic`) and the relative error (:mod:`mmrepvgg.numerics`). Production
code imports those modules directly."""
from .numerics import max_relative_error
from .synthetic import randomize_batch_norms_

__all__ = ['randomize_batch_norms_', 'max_relative_error']
