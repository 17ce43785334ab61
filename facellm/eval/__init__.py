"""Evaluation, a stage of its own: a client of any OpenAI-compatible server.

- ``attributes``: attribute questions of a dataset split, scored per attribute (plus the attribute report)
- ``facexbench``: FaceXBench-format multiple-choice benchmarks (prompt, answer letters, scoring, report); the
  file format itself is read by ``facellm.facexbench_format``, which the leakage check shares
- ``fairness``: accuracy per demographic group, gaps and ratios
- ``calibration``: confidence from token log-probabilities against accuracy
- ``counterfactual``: answer flips when one attribute of a synthetic face changes
- ``identity``: held-out "who is this?" questions must be declined
- ``stats``: confidence intervals (Wilson, bootstrap)
- ``report``: plots and the report files (Markdown, HTML, JSON)
"""
