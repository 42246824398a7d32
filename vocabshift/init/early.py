"""FOCUS's token vectors, trained on a second thread while the plan is made.

``vocabshift init`` spends its first seconds on work that holds the GIL: importing transformers' config
classes, loading both tokenizers, surface forms, the plan. FOCUS's token-level fastText model needs none
of it, only the target ``tokenizer.json`` and the corpus, and runs mostly outside the GIL (the corpus
tokenized by ``tokenizers``, then fastText in a child process), so it starts first and overlaps the plan
(issue 18: about 2 s of FOCUS's 11 s whole process on 2 cores). WECHSEL's alignment was tried the same
way and gained nothing measurable: it holds the GIL.

The main thread takes the result where it would have computed it (:meth:`Background.result`), so errors
surface at the same point as before and the vectors are the same: the tokenizer trained with is checked
to be the plan's target tokenizer (the same serialized ``tokenizers`` model), and they are trained again
otherwise. :meth:`Background.close` stops the work when init fails first (fastText's child is killed)
and waits for it, so no thread, process or temporary directory outlives ``init``.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vocabshift.init.config import InitConfig

log = logging.getLogger(__name__)


class Background:
    """``fn(cancel)`` running on a daemon thread; ``cancel`` is a :class:`threading.Event` it may check."""

    def __init__(self, name: str, fn: Callable[[threading.Event], Any]) -> None:
        self.cancel = threading.Event()
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), name=f"vocabshift-{name}", daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[threading.Event], Any]) -> None:
        try:
            self._result = fn(self.cancel)
        except BaseException as err:  # handed to the main thread by result()
            self._error = err

    def result(self) -> Any:
        """The work's return value (waiting for it), or its exception raised here."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result

    def close(self) -> None:
        """Ask the work to stop and wait until it has: used when init ends before taking the result."""
        self.cancel.set()
        self._thread.join()


def fasttext_options(method_config: Any) -> dict[str, Any]:
    """The method's ``fasttext_*`` options as :func:`~vocabshift.vectors.train_token_vectors` keywords."""
    return {k: getattr(method_config, f"fasttext_{k}") for k in ("model", "dim", "epochs", "min_count")
            if hasattr(method_config, f"fasttext_{k}")}


def focus_token_vectors(tokenizer: Any, vocab_size: int, config: InitConfig, method_config: Any,
                        cancel: threading.Event | None = None) -> tuple[Any, Any]:
    """FOCUS's token-level vectors of ``tokenizer`` on ``config.corpus``: ``(matrix [vocab_size, dim], found)``."""
    from vocabshift.vectors import token_id_vectors, train_token_vectors

    with tempfile.TemporaryDirectory(prefix="vocabshift-focus-") as tmp:
        vecs = train_token_vectors(tokenizer, config.corpus, Path(tmp) / "tokens.bin", threads=config.threads,
                                   seed=config.seed, cancel=cancel, **fasttext_options(method_config))
        return token_id_vectors(vecs, vocab_size)


def _target_tokenizer_file(config: InitConfig) -> Path | None:
    """The ``tokenizer.json`` the plan will load as the target tokenizer, when it is one in a folder."""
    from vocabshift.vocabulary import ID_MAP_FILE

    model_dir = Path(config.model)
    folder = model_dir if (model_dir / ID_MAP_FILE).is_file() else Path(config.tokenizer) if config.tokenizer else None
    if folder is None or not folder.is_dir() or not (folder / "tokenizer.json").is_file():
        return None
    return folder / "tokenizer.json"


def start_focus_token_vectors(config: InitConfig, method_config: Any) -> Background | None:
    """:func:`focus_token_vectors` on a thread with the target ``tokenizer.json`` read by ``tokenizers``
    (None where there is no such file); its result is ``(serialized tokenizer, matrix, found)``."""
    file = _target_tokenizer_file(config)
    if file is None or config.corpus is None or getattr(method_config, "token_vectors", None) is not None:
        return None

    def work(cancel: threading.Event) -> tuple[str, Any, Any]:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(file))
        matrix, found = focus_token_vectors(tokenizer, tokenizer.get_vocab_size(with_added_tokens=True), config,
                                            method_config, cancel)
        return tokenizer.to_str(), matrix, found

    return Background("focus-vectors", work)


def take_focus_token_vectors(early: Background | None, target_hf: Any, vocab_size: int) -> tuple[Any, Any] | None:
    """The early FOCUS vectors when they were trained with the plan's own target tokenizer, else None."""
    if early is None:
        return None
    serialized, matrix, found = early.result()
    backend = getattr(target_hf, "backend_tokenizer", None)
    if backend is None or backend.to_str() != serialized or matrix.shape[0] != vocab_size:
        log.info("FOCUS: the target tokenizer as loaded differs from its tokenizer.json; training its token "
                 "vectors again with the loaded one")
        return None
    return matrix, found
