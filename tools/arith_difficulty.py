"""How hard is the arithmetic task for a model before training? pass@1 and pass@k of the base model on the held-out
split at several difficulties, so the default can be chosen where pass@1 is roughly 10-40 % (room to learn, signal
to learn from).

    python tools/arith_difficulty.py                                 # SmolLM2-135M-Instruct, the grid below
    python tools/arith_difficulty.py --problems 16 --n 8 --grid 20:1:+- 50:1:+- 20:2:+-

Each grid point is max_number:num_ops:ops. The model samples at temperature 0.7 (the preset's), n samples per problem,
`--max-new-tokens` tokens; answers are the last number (or box) of each completion, verified by Math-Verify.
"""
import argparse, os, time
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--model', default='smollm2-135m-instruct')
    ap.add_argument('--grid', nargs='+', default=['10:1:+-', '20:1:+-', '50:1:+-', '20:2:+-', '10:1:*'])
    ap.add_argument('--problems', type=int, default=16, help='held-out problems per grid point')
    ap.add_argument('--n', type=int, default=8, help='samples per problem')
    ap.add_argument('--temperature', type=float, default=0.7)
    ap.add_argument('--max-new-tokens', type=int, default=48)
    ap.add_argument('--threads', type=int, default=None)
    a = ap.parse_args(argv)
    import torch
    if a.threads: torch.set_num_threads(a.threads)
    from flowrl_nb.arith import ArithTask
    from flowrl_nb.eval import evaluate
    from flowrl_nb.model import load_policy
    from flowrl_nb.math_reward import MathVerifier
    model, tok = load_policy(a.model)
    print(f'{a.model}: {a.problems} held-out problems x {a.n} samples, temperature {a.temperature}, '
          f'<= {a.max_new_tokens} tokens; torch threads {torch.get_num_threads()}')
    print(f'{"max_number:num_ops:ops":>24} {"pass@1":>7} {"pass@" + str(a.n):>7} {"no answer":>9} {"truncated":>9} {"seconds":>8}')
    with MathVerifier() as mv:
        for point in a.grid:
            mx, ops_n, ops = point.split(':')
            task = ArithTask(max_number=int(mx), num_ops=int(ops_n), ops=ops, num_problems=1, num_heldout=a.problems)
            t0 = time.time()
            r = evaluate((model, tok), task.records('heldout'), n=a.n, temperature=a.temperature, top_p=1.0,
                         max_new_tokens=a.max_new_tokens, instruction=task.instruction, answer_format=task.answer_format,
                         verifier=mv, progress=False, batch_size=max(1, 64 // a.n))
            s = r.summary
            print(f'{point:>24} {s[f"avg@{a.n}"]:7.3f} {s[f"pass@{a.n}"]:7.3f} {s["no_answer_rate"]:9.3f} '
                  f'{s["truncated_rate"]:9.3f} {time.time() - t0:8.0f}', flush=True)


if __name__ == '__main__':
    main()
