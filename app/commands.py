"""The songwriting requests on the command line: `lyricist lines`, `lyricist predict` (with `--rhymes-with` /
`--syllables`), `lyricist alternatives` and `lyricist analyze`. They run the same code as the endpoints of those
names (lyricist.songwriting), in this process, and hold every option to the API's own rule for its field (protocol.py).
`lyricist predict` without constraints prints what it always did (model.prediction)."""

from __future__ import annotations

import argparse
import json
import re
import sys

from pydantic import ValidationError

from lyricist.model import SamplingParams, load_forward_checkpoint

from . import protocol as p


def _syllable_spec(text: str) -> int | list[int]:
    """N or MIN-MAX, as `syllables` of /v1/lines."""
    try:
        value: int | list[int] = [int(part) for part in text.split("-")] if "-" in text.strip("-") else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN-MAX, got {text!r}") from None
    return value


def add_lines_command(subcommands: argparse._SubParsersAction) -> None:
    c = subcommands.add_parser("lines", help="candidate next lines under syllable and rhyme constraints")
    c.add_argument("--model", required=True, metavar="DIR", help="checkpoint directory")
    c.add_argument("--prompt", required=True, help="the lyrics so far (a line break is added if missing)")
    c.add_argument("--syllables", type=_syllable_spec, default=None, metavar="N|MIN-MAX",
                   help=f"syllables of the line, 1-{p.MAX_LINE_SYLLABLES}, or a range")
    c.add_argument("--stress", default=None, metavar="PATTERN",
                   help="the line's stresses, a digit a syllable (1 stressed, 0 not): 01010101 is iambic tetrameter")
    c.add_argument("--rhymes-with", default=None, metavar="WORD", help="the line ends in a rhyme with WORD")
    c.add_argument("--rhyme", choices=("perfect", "near"), default="perfect", help="kind of rhyme (default perfect)")
    c.add_argument("-n", type=int, default=3, metavar="N", help=f"how many lines, 1-{p.MAX_LINES} (default 3)")
    c.add_argument("--temperature", type=float, default=0.8, help="default 0.8")
    c.add_argument("--seed", type=int, default=None, help="make the output reproducible")
    c.add_argument("--json", action="store_true", help="print /v1/lines' response body instead")
    c.set_defaults(run=_run_lines)


def _run_lines(args: argparse.Namespace) -> None:
    from lyricist.songwriting.lines import ConstraintError, generate_lines
    from lyricist.songwriting.tasks import end_words, lexicon, word_is_known

    body = {"prompt": args.prompt, "n": args.n, "syllables": args.syllables, "stress": args.stress,
            "rhymes_with": args.rhymes_with,
            "rhyme": args.rhyme, "temperature": args.temperature, "seed": args.seed}
    try:
        request = p.LinesRequest.model_validate(body)
    except ValidationError as error:
        raise ValueError(_option_error(error)) from None
    params = SamplingParams(temperature=request.temperature, seed=request.seed)
    checkpoint = load_forward_checkpoint(args.model)
    try:
        result = generate_lines(checkpoint.model, checkpoint.tokenizer, lexicon(), request.prompt, n=request.n,
                                syllables=request.syllables, rhymes_with=request.rhymes_with, rhyme=request.rhyme,
                                params=params, end_words=end_words(checkpoint), stress=request.stress)
    except ConstraintError as error:
        raise ValueError(f"--{error.field.replace('_', '-')}: {error}") from None
    known = None if request.rhymes_with is None else word_is_known(request.rhymes_with)
    if args.json:
        out = {"model": checkpoint.name, "seed": result.seed, "lines": [line.as_dict() for line in result.lines],
               "end_words": [end.as_dict() for end in result.end_words],
               "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens}}
        if known is not None:
            out["rhymes_with_known"] = known
        print(json.dumps(out, ensure_ascii=False, indent=2))
        return
    width = max(len(line.text) for line in result.lines)
    for line in result.lines:
        rhyme = f", rhymes with {request.rhymes_with!r}" if line.rhymes else ""
        print(f"{line.text:<{width}}  ({line.syllables} syllables{rhyme}, {line.nats_per_char:.2f} nats/char)")
    ends = ", ".join(f"{end.word} {end.prob:.0%}" for end in result.end_words)
    print(f"likely end words: {ends}", file=sys.stderr)
    if known is False:
        print(f"note: {request.rhymes_with!r} is not in the dictionary; its rhymes come from an estimated "
              f"pronunciation", file=sys.stderr)
    print(f"seed {result.seed}", file=sys.stderr)


def _option_error(error: ValidationError) -> str:
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    option = {"n": "-n", "rhymes_with": "--rhymes-with"}.get(field, f"--{field.replace('_', '-')}")
    return f"{option}: {first['msg'].removeprefix('Value error, ')}, got {first.get('input')!r}"


def add_predict_command(subcommands: argparse._SubParsersAction) -> None:
    c = subcommands.add_parser("predict", help="print the next-word distribution after a prompt")
    c.add_argument("--model", required=True, metavar="DIR", help="checkpoint directory")
    c.add_argument("--prompt", required=True, help="the text so far")
    c.add_argument("--top-k", type=int, default=10, metavar="K", help="how many words (1-100, default 10)")
    c.add_argument("--rhymes-with", default=None, metavar="WORD", help="only words that rhyme with WORD")
    c.add_argument("--rhyme", choices=("perfect", "near"), default="perfect", help="kind of rhyme (default perfect)")
    c.add_argument("--syllables", type=int, default=None, metavar="N",
                   help=f"only words of N syllables (1-{p.MAX_WORD_SYLLABLES})")
    c.set_defaults(run=_run_predict)


def _run_predict(args: argparse.Namespace) -> None:
    body = {"prompt": args.prompt, "top_k": args.top_k, "rhymes_with": args.rhymes_with, "rhyme": args.rhyme,
            "syllables": args.syllables}
    try:
        request = p.PredictRequest.model_validate(body)
    except ValidationError as error:
        raise ValueError(_option_error(error)) from None
    checkpoint = load_forward_checkpoint(args.model)
    if not request.constrained:
        from lyricist.model.prediction import predict

        result = predict(checkpoint.model, checkpoint.tokenizer, request.prompt, top_k=request.top_k)
        for text, prob in result.distribution:
            print(f"{prob:8.2%}  {text!r}")
        return
    from lyricist.model.steps import run_to_end
    from lyricist.songwriting.lines import ConstraintError
    from lyricist.songwriting.tasks import predict_words

    try:
        result = run_to_end(predict_words(checkpoint.model, checkpoint.tokenizer, request.prompt, request.top_k,
                                          1.0, request.rhymes_with, request.rhyme, request.syllables))
    except ConstraintError as error:
        raise ValueError(f"--{error.field.replace('_', '-')}: {error}") from None
    prediction = result.prediction
    for text, prob in prediction.distribution:
        print(f"{prob:8.2%}  {text!r}")
    print(f"constraint mass {prediction.constraint_mass:.4%}: the probability that the next word qualifies; "
          f"the figures above are given that it does", file=sys.stderr)
    if result.rhymes_with_known is False:
        print(f"note: {request.rhymes_with!r} is not in the dictionary; its rhymes come from an estimated "
              f"pronunciation", file=sys.stderr)


def add_analyze_command(subcommands: argparse._SubParsersAction) -> None:
    p = subcommands.add_parser(
        "analyze", help="syllables, stress and rhyme scheme of lyrics",
        description="Per stanza (blank lines separate them) and line: syllables, stress (1 stressed, 0 not), "
                    "end word, rhyme part, scheme letter (- for a line that rhymes with no other in its "
                    "stanza) and the words the dictionary lacks (their pronunciation is estimated).")
    p.add_argument("file", nargs="?", default="-", metavar="FILE", help="the lyrics (default -, standard input)")
    p.add_argument("--json", action="store_true", help="print JSON in the shape of /v1/analyze")
    p.add_argument("--near", action="store_true",
                   help="count near rhymes (assonance, consonance) in the scheme, not only perfect rhymes")
    p.add_argument("--model", default=None, metavar="DIR",
                   help="a checkpoint: also each line's nats_per_char, how surprising the model finds it in context")
    p.set_defaults(run=_run_analyze)


def _run_analyze(args: argparse.Namespace) -> None:
    from lyricist.songwriting.analysis import analyze_text, format_table
    from lyricist.songwriting.phonology import Phonology

    if args.file == "-":
        text = sys.stdin.read()
    else:
        with open(args.file, encoding="utf-8") as f:
            text = f.read()
    scorer, model = None, None
    if args.model:  # the model's surprisal per line: the whole text scored once (tasks.model_scorer)
        from lyricist.songwriting.tasks import model_scorer

        checkpoint = load_forward_checkpoint(args.model)
        scorer, model = model_scorer(checkpoint.model, checkpoint.tokenizer), checkpoint.name
    stanzas = analyze_text(text, Phonology.load(), rhyme="near" if args.near else "perfect", scorer=scorer)
    if args.json:
        print(json.dumps({"model": model, "stanzas": stanzas}, ensure_ascii=False, indent=2))
    else:
        sys.stdout.write(format_table(stanzas) if stanzas else "no lyrics (no non-blank line)\n")


def add_alternatives_command(subcommands: argparse._SubParsersAction) -> None:
    c = subcommands.add_parser(
        "alternatives", help="other words for a part of a line, ranked with the text on both sides",
        description="Candidates for a part of one line (a word, a phrase, or an empty part to insert at), proposed "
                    "by the model reading the text before it and ranked with the text after it too (to the end of "
                    "the stanza), as /v1/alternatives.")
    c.add_argument("--model", required=True, metavar="DIR", help="checkpoint directory")
    c.add_argument("--text", required=True, help="the lyrics")
    c.add_argument("--part", default=None, metavar="WORDS",
                   help="the words to replace, found as whole words in --text (the first occurrence)")
    c.add_argument("--start", type=int, default=None, metavar="N", help="or the part's offsets: its first character")
    c.add_argument("--end", type=int, default=None, metavar="N", help="and the one after its last (default --start)")
    c.add_argument("--syllables", type=int, default=None, metavar="N", help="syllables of the replacement")
    c.add_argument("--stress", default=None, metavar="PATTERN", help="its stresses, a digit a syllable (1 stressed)")
    c.add_argument("--rhymes-with", default=None, metavar="WORD", help="its last word rhymes with WORD")
    c.add_argument("--rhyme", choices=("perfect", "near"), default="perfect", help="kind of rhyme (default perfect)")
    c.add_argument("--max-words", type=int, default=None, metavar="N",
                   help=f"words in a replacement, 1-{p.MAX_REPLACEMENT_WORDS} (default: the part's own count)")
    c.add_argument("-n", type=int, default=10, metavar="N", help=f"how many, 1-{p.MAX_ALTERNATIVES} (default 10)")
    c.add_argument("--json", action="store_true", help="print /v1/alternatives' response body instead")
    c.set_defaults(run=_run_alternatives)


def _part_offsets(args: argparse.Namespace) -> tuple[int, int]:
    if args.part is not None:
        found = re.search(rf"(?<![\w']){re.escape(args.part)}(?![\w'])", args.text)
        if found is None:
            raise ValueError(f"--part: {args.part!r} is not in --text as whole words")
        return found.start(), found.end()
    if args.start is None:
        raise ValueError("--part or --start: say which part of --text to replace")
    return args.start, args.start if args.end is None else args.end


def _run_alternatives(args: argparse.Namespace) -> None:
    from lyricist.songwriting.alternatives import PartError, generate_alternatives
    from lyricist.songwriting.lines import ConstraintError
    from lyricist.songwriting.phonology import Phonology
    from lyricist.songwriting.tasks import end_words, lexicon

    start, end = _part_offsets(args)
    body = {"text": args.text, "start": start, "end": end, "n": args.n, "syllables": args.syllables,
            "stress": args.stress, "rhymes_with": args.rhymes_with, "rhyme": args.rhyme, "max_words": args.max_words}
    try:
        request = p.AlternativesRequest.model_validate(body)
    except ValidationError as error:
        raise ValueError(_option_error(error)) from None
    checkpoint = load_forward_checkpoint(args.model)
    try:
        result = generate_alternatives(
            checkpoint.model, checkpoint.tokenizer, lexicon(), Phonology.load(), request.text, request.start,
            request.end, end_words(checkpoint), n=request.n, syllables=request.syllables, stress=request.stress,
            rhymes_with=request.rhymes_with, rhyme=request.rhyme, max_words=request.max_words,
            backward=checkpoint.backward)
    except (ConstraintError, PartError) as error:
        part = args.part is not None and error.field in ("start", "end")
        option = "--part" if part else f"--{error.field.replace('_', '-')}"
        raise ValueError(f"{option}: {error}") from None
    if args.json:
        print(json.dumps({"model": checkpoint.name, "original": {**result.original.as_dict(), "rank": result.rank},
                          "alternatives": [a.as_dict() for a in result.alternatives],
                          "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": 0}},
                         ensure_ascii=False, indent=2))
        return
    width = max((len(a.text) for a in result.alternatives), default=0)
    for alternative in result.alternatives:
        rhyme = f", rhymes with {alternative.rhymes_with}" if alternative.rhymes_with else ""
        mark = "  (the original)" if alternative is result.original else ""
        print(f"{alternative.prob:7.2%}  {alternative.text:<{width}}  {alternative.syllables} syllables, stress "
              f"{alternative.stress}{rhyme}{mark}")
    if result.original.text and result.original not in result.alternatives:  # its share, which the rest leave
        print(f"{result.original.prob:7.2%}  {result.original.text}  (the original, not listed: rank {result.rank})")
