"""Check a nuScenes detection submission before uploading it.

Usage::

    python tools/validate_submission.py RESULTS --dataroot D --version V --split S
    python tools/validate_submission.py RESULTS --tokens TOKENS_FILE

The expected sample tokens are those of split S (``test``, ``val``, or the
devkit names ``mini_val`` ...) in the tables of D/V, or those listed in
TOKENS_FILE (a JSON list, a JSON object whose values hold ``sample_token``,
or an info ``.pkl``). The file is loaded with the devkit's own
``load_prediction`` and checked for token coverage, boxes per sample, class
and attribute validity, finite values, the meta block and its size (rules:
``fuller.evaluation.submission``). Prints a summary; exits 1 naming the
first problem, 2 on bad arguments.
"""
import argparse
import json
import sys


def parse_args(argv=None) -> argparse.Namespace:
    # standard library only: `--help` answers before fuller (torch) is imported
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('results', help='results_nusc.json to check')
    p.add_argument('--dataroot', help='nuScenes dataroot holding VERSION/')
    p.add_argument('--version', help='v1.0-test, v1.0-trainval or v1.0-mini')
    p.add_argument('--split', help='test, val, train (or mini_val, ...)')
    p.add_argument('--tokens', help='file listing the expected sample tokens '
                   '(instead of --dataroot/--version/--split)')
    p.add_argument('--max-boxes', type=int, default=None,
                   help="boxes per sample (default: the challenge's, "
                   'fuller.evaluation.submission.MAX_BOXES_PER_SAMPLE)')
    p.add_argument('--max-size-mib', type=float, default=None,
                   help="file size (default: the challenge's, "
                   'fuller.evaluation.submission.DEFAULT_MAX_BYTES)')
    args = p.parse_args(argv)
    table = (args.dataroot, args.version, args.split)
    if args.tokens is None and None in table:
        p.error('give --dataroot, --version and --split, or --tokens')
    if args.tokens is not None and any(v is not None for v in table):
        p.error('--tokens replaces --dataroot/--version/--split')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from fuller.evaluation.submission import (DEFAULT_MAX_BYTES,
                                              MAX_BOXES_PER_SAMPLE,
                                              SubmissionError,
                                              tokens_from_dataroot,
                                              tokens_from_file,
                                              validate_submission)
    if args.max_boxes is None:
        args.max_boxes = MAX_BOXES_PER_SAMPLE
    if args.max_size_mib is None:
        args.max_size_mib = DEFAULT_MAX_BYTES / 2**20
    try:
        if args.tokens is not None:
            expected = tokens_from_file(args.tokens)
            source = args.tokens
        else:
            expected = tokens_from_dataroot(args.dataroot, args.version,
                                            args.split)
            source = f'{args.dataroot} {args.version} {args.split}'
    except (OSError, ValueError) as err:
        print(f'validate_submission: error: {err}', file=sys.stderr)
        return 2
    try:
        summary = validate_submission(
            args.results, expected, max_boxes=args.max_boxes,
            max_bytes=int(args.max_size_mib * 2**20))
    except SubmissionError as err:
        print(f'INVALID {args.results}: {err}', file=sys.stderr)
        return 1
    print(f'VALID {args.results} against {len(expected)} samples of '
          f'{source}')
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
