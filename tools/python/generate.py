#!/usr/bin/python3
"""Streams one Generate call from a shift router and prints the text as it
arrives, then the finish reason, usage and the server's mode counters.

    tools/python/generate.py --address=127.0.0.1:50051 --prompt="Hello" --max_tokens=32
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shift_client  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", default="127.0.0.1:50051", help="router host:port")
    parser.add_argument("--prompt", default="Once upon a time", help="prompt text")
    parser.add_argument("--max_tokens", type=int, default=32, help="tokens to generate")
    parser.add_argument("--temperature", type=float, default=None,
                        help="0 is greedy (default: the model's, else greedy)")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed")
    parser.add_argument("--ignore_eos", action="store_true", help="generate past EOS")
    parser.add_argument("--tls_ca", help="PEM CA of the router's certificate (connect with TLS)")
    parser.add_argument("--api_key_file", help="file whose first key is sent as the API key "
                        "(default: $SHIFT_API_KEY)")
    args = parser.parse_args()

    key = (shift_client.read_api_key(args.api_key_file) if args.api_key_file
           else os.environ.get("SHIFT_API_KEY"))
    client = shift_client.Client(args.address, api_key=key, tls_ca=args.tls_ca)
    sys.stdout.write(args.prompt)
    final = None
    for raw in client.generate_stream(text=args.prompt, max_tokens=args.max_tokens,
                                      temperature=args.temperature, seed=args.seed,
                                      ignore_eos=args.ignore_eos):
        message = shift_client.decode_generate_response(raw)
        if "delta" in message:
            sys.stdout.write(message["delta"]["text"])
            sys.stdout.flush()
        else:
            final = message["final"]
    print()
    usage = final["usage"]
    print("finish: %s; %d prompt + %d generated tokens; first token after %.1f ms, all after "
          "%.1f ms" % (final["finish_reason"], usage["prompt_tokens"],
                       usage["completion_tokens"], 1000 * usage["time_to_first_token_seconds"],
                       1000 * usage["e2e_seconds"]))
    modes = client.status()["modes"]
    print("steps: %d in TP, %d in SP, %d mode switches" %
          (modes["tp_steps"], modes["sp_steps"], modes["switches"]))


if __name__ == "__main__":
    main()
