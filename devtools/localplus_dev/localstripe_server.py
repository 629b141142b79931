"""localstripe with its state in a file of the stack's own (`--state PATH`), so that two stacks on one
machine (`make up` and a test run) do not share it: localstripe itself always uses
/tmp/localstripe.pickle. Otherwise exactly `localstripe --port N [--from-scratch]`."""

import pickle
import sys
from pathlib import Path

from localstripe import resources, server


def main() -> None:
    args = sys.argv[1:]
    where = args.index("--state")
    state = Path(args[where + 1])
    del args[where : where + 2]

    def load(store: resources.Store) -> None:
        if state.exists():
            with state.open("rb") as file:
                store.clear()
                store.update(pickle.load(file))

    def dump(store: resources.Store) -> None:
        with state.open("wb") as file:
            pickle.dump(dict(store), file, protocol=pickle.HIGHEST_PROTOCOL)

    resources.Store.try_load_from_disk = load
    resources.Store.dump_to_disk = dump
    sys.argv = [sys.argv[0], *args]
    server.start()


if __name__ == "__main__":
    main()
