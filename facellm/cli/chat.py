"""`facellm chat`: the Gradio face chat, a client of the OpenAI-compatible API."""

from __future__ import annotations

from facellm.cli.args import add_api_key_arg, add_bind_args


def add_parser(sub) -> None:
    p = sub.add_parser("chat", help="Gradio face chat (faces boxed, pick one, attribute table), a client of the API")
    p.add_argument("--endpoint", required=True, help="API base URL, e.g. http://127.0.0.1:8000/v1")
    add_bind_args(p, 7860)
    add_api_key_arg(p, "bearer key the API expects")
    p.add_argument("--examples", nargs="+", metavar="IMAGES",
                   help="photos offered as example thumbnails (files, folders, globs; the first 8)")
    p.set_defaults(func=cmd_chat)


def cmd_chat(args) -> None:
    from serve.caption import collect_images
    from serve.chat_ui import launch_ui

    examples = [str(p) for p in collect_images(args.examples)][:8] if args.examples else None
    launch_ui(args.endpoint, host=args.host, port=args.port, api_key=args.api_key, examples=examples)
