"""Evaluators offered to ``fastt2i train ... --eval-every N --eval NAME``.

Each module here calls ``fastt2i.train.registry.register_evaluator(name, make, summary)``,
where ``make(args)`` returns a callable ``fn(trainer) -> {metric: float}``; the registry
imports every module of this package on its first look-up.
"""
