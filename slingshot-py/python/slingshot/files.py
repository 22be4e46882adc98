"""The file objects ``process`` gets: :class:`ObjectReader` streams an object yet behaves like ``io.BytesIO``; :class:`WriteHandle` stages what is written for upload."""

from __future__ import annotations

import io
from typing import Any

__all__ = ["ObjectReader", "WriteHandle"]

#: Bytes the reader buffers; memory stays flat whatever the object's size.
BUFFER_SIZE = 256 * 1024


class _Stream(io.RawIOBase):
    """The raw, seekable stream of one object over the native reader.

    Seeking forward reads and discards; seeking backwards starts a new
    request to the store and reads up to the position. Both keep memory
    flat; code that seeks back and forth often should read the whole object.
    """

    def __init__(self, native) -> None:
        super().__init__()
        self._native = native
        self._pos = 0
        self._size: int | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._native.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self._pos += n
        return n

    def readall(self) -> bytes:
        data = self._native.read(-1)
        self._pos += len(data)
        self._size = self._pos
        return data

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._pos + offset
        elif whence == io.SEEK_END:
            target = self._length() + offset
        else:
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        if target < 0:
            raise ValueError(f"negative seek position {target}")
        if target < self._pos:
            self._native.reopen()
            self._pos = 0
        while self._pos < target:
            chunk = self._native.read(min(target - self._pos, BUFFER_SIZE))
            if not chunk:
                break
            self._pos += len(chunk)
        return self._pos

    def _length(self) -> int:
        if self._size is None:
            # Reading to the end tells the length; seek() then comes back.
            while True:
                chunk = self._native.read(BUFFER_SIZE * 4)
                if not chunk:
                    break
                self._pos += len(chunk)
            self._size = self._pos
        return self._size

    def close(self) -> None:
        if not self.closed:
            self._native.close()
        super().close()


class ObjectReader(io.BufferedReader):
    """What ``read_file(key, id)`` returns: a buffered, streaming reader of
    one object. It offers what code written against ``io.BytesIO`` uses —
    ``read()``, ``readline()``, iteration, ``seek``/``tell`` and
    ``getvalue()`` — without holding the object in memory (``read()`` and
    ``getvalue()`` of course return all of it)."""

    def __init__(self, native, name: str) -> None:
        super().__init__(_Stream(native), buffer_size=BUFFER_SIZE)
        self._object_name = name

    @property
    def name(self) -> str:  # type: ignore[override]
        return self._object_name

    def getvalue(self) -> bytes:
        """The whole object, as ``io.BytesIO.getvalue()``; the position is kept."""
        here = self.tell()
        self.seek(0)
        data = self.read()
        self.seek(here)
        return data

    def __repr__(self) -> str:
        return f"<slingshot.ObjectReader {self._object_name}>"


class WriteHandle:
    """What ``write_file(key, id)`` returns: a staged file uploaded after
    ``process`` returns successfully (never if it fails). Accepts ``bytes``,
    any buffer (``bytearray``, ``memoryview``, arrays) and ``str`` (written as
    UTF-8); works with ``with``. Closed automatically when the request ends."""

    def __init__(self, native, name: str) -> None:
        self._native = native
        self.name = name

    def write(self, data: Any) -> int:
        """Writes ``data`` and returns the number of bytes written."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        elif not isinstance(data, bytes):
            try:
                data = memoryview(data).cast("B").tobytes()
            except TypeError:
                raise TypeError(
                    f"write() takes bytes, a buffer or str, not {type(data).__name__}"
                ) from None
        return self._native.write(data)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._native.flush()

    def close(self) -> None:
        """Flushes and closes; the object is still uploaded when ``process`` succeeds."""
        self._native.close()

    @property
    def closed(self) -> bool:
        return self._native.closed

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def __enter__(self) -> "WriteHandle":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<slingshot.WriteHandle {self.name}>"
