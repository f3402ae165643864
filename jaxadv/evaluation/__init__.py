"""Evaluation: clean and robust accuracy, reports and sanity checks."""

from jaxadv.evaluation.autoattack import ENSEMBLES
from jaxadv.evaluation.autoattack import STANDARD
from jaxadv.evaluation.autoattack import evaluate_robustness
from jaxadv.evaluation.report import SanityCheck
from jaxadv.evaluation.report import evaluate
from jaxadv.evaluation.report import sanity_checks
from jaxadv.evaluation.robust import accuracy
from jaxadv.evaluation.robust import predict
from jaxadv.evaluation.robust import robust_accuracy
from jaxadv.evaluation.robust import robust_correct
