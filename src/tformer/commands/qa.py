"""`tformer qa MODEL --question Q --context FILE`: the span of FILE that answers Q."""

from __future__ import annotations

import argparse
import dataclasses
import json

from tformer.commands import MODEL_HELP


def run(args: argparse.Namespace) -> None:
    from tformer.data.records import read_utf8
    from tformer.loading import load
    from tformer.pipelines import answer_question

    model, tokenizer = load(args.model, require_tokenizer=True)
    context = read_utf8(args.context)
    answer = answer_question(
        model,
        tokenizer,
        args.question,
        context,
        max_seq_len=args.max_seq_len,
        doc_stride=args.doc_stride,
        max_answer_len=args.max_answer_len,
    )
    if args.json:
        fields = dataclasses.asdict(answer)
        fields["answer"] = fields.pop("text")
        print(json.dumps(fields, ensure_ascii=False))
        return
    print(answer.text)
    print(f"  score {answer.score:.3f}, characters {answer.start}-{answer.end} of {args.context}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "qa",
        help="answer a question with a span of a text (extractive question answering)",
        description="Find the span of the --context file that best answers --question with a "
        "question-answering encoder (e.g. a *ForQuestionAnswering trained on SQuAD) and print "
        "it, its score p(start) * p(end) and its character span (end exclusive). A context "
        "longer than one window is read in overlapping windows of --max-seq-len tokens "
        "(question included) that share --doc-stride tokens; the best span of all windows "
        "wins.",
    )
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--question", required=True, help="the question")
    p.add_argument("--context", required=True, metavar="FILE", help="UTF-8 text file to search")
    p.add_argument(
        "--max-seq-len",
        type=int,
        help="tokens per window (default: 384, or the model's context if shorter)",
    )
    p.add_argument(
        "--doc-stride",
        type=int,
        help="context tokens consecutive windows share (default: 128, or half a window)",
    )
    p.add_argument(
        "--max-answer-len", type=int, default=15, help="longest answer in tokens (default 15)"
    )
    p.add_argument("--json", action="store_true", help='print {"answer", "start", "end", "score"}')
    p.set_defaults(handler=run)
