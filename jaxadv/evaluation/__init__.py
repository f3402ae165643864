"""Evaluation: clean and robust accuracy, reports and sanity checks."""

from jaxadv.evaluation.autoattack import ENSEMBLES
from jaxadv.evaluation.autoattack import RAND
from jaxadv.evaluation.autoattack import STANDARD
from jaxadv.evaluation.autoattack import evaluate_randomized
from jaxadv.evaluation.autoattack import evaluate_robustness
from jaxadv.evaluation.benchmark import DEFAULT_EPS
from jaxadv.evaluation.benchmark import as_apply_fn
from jaxadv.evaluation.benchmark import benchmark
from jaxadv.evaluation.benchmark import environment
from jaxadv.evaluation.benchmark import format_benchmark
from jaxadv.evaluation.benchmark import format_eps
from jaxadv.evaluation.report import SanityCheck
from jaxadv.evaluation.report import evaluate
from jaxadv.evaluation.report import sanity_checks
from jaxadv.evaluation.robust import accuracy
from jaxadv.evaluation.robust import predict
from jaxadv.evaluation.robust import robust_accuracy
from jaxadv.evaluation.robust import robust_correct
