#!/usr/bin/env python3
"""Plan files for benches/peers: one request per line, the path, then
optional tab-separated `name: value` headers (read by benches/plan.lua and
`loadgen run --plan`). Seeded, so every target and round of a run sees the
same sequence.

  plan.py one OUT PATH                      the one path
  plan.py keys OUT PREFIX N                 /users/<PREFIX><i>, i < N, once each
  plan.py zipf OUT KEYS LINES SEED          /users/z<k>, k drawn Zipf(1.0) over KEYS
  plan.py tokens OUT TOKENS PATH LINES SEED PATH with a token drawn uniformly
                                            from the file TOKENS (one per line)
  plan.py hit OUT TAG HOT LINES SEED        90 % /users/h<k> (k < HOT, uniform),
                                            10 % /users/c-<TAG>-<i>, each new
"""
import random
import sys


def main(kind, out, *args):
    with open(out, "w") as f:
        for line in lines(kind, *args):
            f.write(line + "\n")


def lines(kind, *args):
    if kind == "one":
        yield args[0]
    elif kind == "keys":
        prefix, n = args[0], int(args[1])
        for i in range(n):
            yield "/users/%s%d" % (prefix, i)
    elif kind == "zipf":
        keys, count, seed = int(args[0]), int(args[1]), int(args[2])
        rng = random.Random(seed)
        # The most popular key is not key 0: ranks map to keys at random.
        ranked = list(range(keys))
        rng.shuffle(ranked)
        weights = [1.0 / rank for rank in range(1, keys + 1)]
        for k in rng.choices(ranked, weights=weights, k=count):
            yield "/users/z%d" % k
    elif kind == "tokens":
        tokens = [t.strip() for t in open(args[0]) if t.strip()]
        path, count, seed = args[1], int(args[2]), int(args[3])
        rng = random.Random(seed)
        for _ in range(count):
            yield "%s\tauthorization: Bearer %s" % (path, rng.choice(tokens))
    elif kind == "hit":
        tag, hot, count, seed = args[0], int(args[1]), int(args[2]), int(args[3])
        rng = random.Random(seed)
        for i in range(count):
            if rng.random() < 0.9:
                yield "/users/h%d" % rng.randrange(hot)
            else:
                yield "/users/c-%s-%d" % (tag, i)
    else:
        sys.exit("plan.py: unknown kind %r" % kind)


if __name__ == "__main__":
    main(*sys.argv[1:])
