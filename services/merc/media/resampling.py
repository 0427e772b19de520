"""Resampling to 16 kHz block by block, so a clip is never held whole at its own rate.

The filter and the output are scipy's ``resample_poly`` (the same Kaiser-windowed FIR, the same
alignment and length), computed as a stream: each block is filtered with the tail of the one
before it, so memory is one block plus the output, whatever the input's length or rate.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from merc.media import MIN_SAMPLE_RATE, SAMPLE_RATE, MediaError


class Resampler:
    """Feed mono float32 blocks at ``rate`` Hz; ``finish()`` returns the whole clip at 16 kHz."""

    def __init__(self, rate: int) -> None:
        if rate < MIN_SAMPLE_RATE:
            raise MediaError(f"audio sample rate {rate} Hz is too low to carry speech")
        # Exact for the usual rates (44100 Hz: 160/441); an odd rate (16001 Hz) is approximated to
        # 0.1 %, inaudible, where its exact ratio would design a filter of millions of taps.
        ratio = Fraction(SAMPLE_RATE, rate).limit_denominator(1000)
        self.up, self.down = ratio.numerator, ratio.denominator
        self.out: list[np.ndarray] = []
        self.n_in = 0
        if self.up == self.down == 1:
            return
        from scipy.signal import firwin

        # resample_poly's filter and its zero padding, which centres output sample j on input j*down/up.
        half_len = 10 * max(self.up, self.down)
        h = firwin(2 * half_len + 1, 1.0 / max(self.up, self.down), window=("kaiser", 5.0)).astype(np.float32) * self.up
        pre_pad = self.down - half_len % self.down
        self.h = np.concatenate([np.zeros(pre_pad, np.float32), h])
        self.first = (half_len + pre_pad) // self.down  # the full convolution's first output that is kept
        self.next = self.first  # the next output (index in the full convolution) to compute
        self.start = 0  # the input index of held[0], always a multiple of down
        self.held = np.zeros(0, np.float32)

    def feed(self, block: np.ndarray) -> None:
        self.n_in += len(block)
        if self.up == self.down == 1:
            self.out.append(np.asarray(block, np.float32).copy())
            return
        self.held = np.concatenate([self.held, np.asarray(block, np.float32)])
        # Output j reads inputs up to floor(j * down / up): those held are enough up to here.
        self._emit(((self.start + len(self.held)) * self.up - 1) // self.down + 1)

    def finish(self) -> np.ndarray:
        if not (self.up == self.down == 1):
            total = self.first + -(-self.n_in * self.up // self.down)  # ceil: resample_poly's length
            # Past the end the input is zero, as resample_poly pads it.
            need = (total - 1) * self.down // self.up + 1 - (self.start + len(self.held))
            self.held = np.concatenate([self.held, np.zeros(max(need, 0), np.float32)])
            self._emit(total)
        out = np.concatenate(self.out) if self.out else np.zeros(0, np.float32)
        self.out = []
        return out

    def _emit(self, end: int) -> None:
        """Outputs [next, end) of the full convolution, then drop the inputs no later output reads."""
        if end <= self.next:
            return
        from scipy.signal import upfirdn

        offset = self.start * self.up // self.down  # output index of the held segment's first output
        y = upfirdn(self.h, self.held, self.up, self.down)
        self.out.append(y[self.next - offset : end - offset].astype(np.float32))
        self.next = end
        # Output j reads inputs from (j * down - len(h)) / up on: keep those, from a multiple of down.
        keep = max((self.next * self.down - len(self.h)) // self.up, self.start)
        keep -= keep % self.down
        keep = max(keep, self.start)
        self.held = self.held[keep - self.start :]
        self.start = keep
