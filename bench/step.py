"""One recurrent step (a piece per row) of the shipped model: the fused LSTM kernel against the cell written out.

    python bench/step.py [--model checkpoints/shakespeare-lstm] [--threads 1]

Prints milliseconds per step of both layers (the median of 7 rounds) for batches of 1, 8, 32 and 64 rows:
`fused` calls each layer's nn.LSTM on one time step, `written out` is what `LanguageModel.features` runs for a
step in inference (model/network.py, `_lstm_step`, products in blocks of STEP_BLOCK_ROWS rows).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lyricist.model.checkpoint import load_checkpoint  # noqa: E402


def per_call_ms(fn, calls: int = 20) -> float:
    fn()
    rounds = []
    for _ in range(7):
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        rounds.append((time.perf_counter() - started) / calls * 1e3)
    return statistics.median(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "checkpoints" / "shakespeare-lstm")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_checkpoint(args.model).model.eval()
    print(f"{args.model}: {model.config.layers}x{model.config.hidden_size} LSTM, {args.threads} thread(s)")
    print("reproduce: python bench/step.py " + " ".join(sys.argv[1:]))
    with torch.inference_mode():
        for rows in (1, 8, 32, 64):
            state = model.initial_state(rows)
            tokens = torch.randint(0, model.config.vocab_size, (rows, 1))

            def fused():
                x = model.embedding(tokens)
                for index, rnn in enumerate(model.rnns):
                    x, _ = rnn(x, (state.rnn[index, 0:1], state.rnn[index, 1:2]))

            fused_ms = per_call_ms(fused)
            written_ms = per_call_ms(lambda: model.features(tokens, state))
            print(f"{rows:3d} rows: fused {fused_ms:6.2f} ms, written out {written_ms:6.2f} ms")


if __name__ == "__main__":
    main()
