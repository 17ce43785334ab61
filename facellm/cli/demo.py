"""`facellm demo`: the whole loop offline (the loop itself is facellm.demo)."""

from __future__ import annotations

from pathlib import Path

from facellm.cli.args import ENGINES, output_dir


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="the whole loop offline, in one command",
                       description="Synthetic faces -> tiny Qwen2-VL -> eval base -> LoRA fine-tune -> merge -> "
                                   "serve the tuned model (vLLM where installed) -> eval tuned -> before/after "
                                   "table -> chat UI.")
    p.add_argument("--out", type=output_dir, help="fresh output folder (default: runs/demo-<time>)")
    p.add_argument("--n", type=int, default=6400, help="synthetic images; validation and test get 1/20 each, at most 200")
    p.add_argument("--steps", type=int, help="training steps (default: the tiny-synthetic recipe's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the faces, the model's weights and training")
    p.add_argument("--no-ui", action="store_true", help="stop after the report")
    p.add_argument("--port", type=int, default=8000, help="API port")
    p.add_argument("--ui-port", type=int, default=7860, help="chat UI port")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="engine serving the tuned model (auto: vLLM where installed)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> None:
    from facellm.demo import run_demo

    run_demo(Path(args.out) if args.out else None, steps=args.steps, n_images=args.n, ui=not args.no_ui,
             port=args.port, ui_port=args.ui_port, seed=args.seed, engine=args.engine)
