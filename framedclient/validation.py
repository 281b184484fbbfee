"""
The checks every setting and constructor argument goes through.

Each :class:`SettingKind` is one sort of value (a count, a number of seconds, a
share, a switch...): how it is checked, read from the command line and
shown.  :mod:`framedclient.config` gives one to each field of its classes;
the classes below it that take arguments of their own (backoff policies,
the connection, the limiter) check them with the same kinds through
:func:`check_argument`, so a wrong value is refused the same way
everywhere: at the call, naming the argument, with what it accepts.

The rule the kinds enforce: a bool is never a number, a string is never a
number or a bool, and ``None`` is accepted only where it has a meaning
("off").  ``timeout="5"`` used to fail later, far from the typo;
``pool_size=True`` used to be taken as 1, ``ExponentialBackoff(initial=True)``
too; and a flag is a ``bool``, because ``"no"`` is a true string.

This module imports nothing from framedclient, so any layer may use it.
"""

from __future__ import annotations

import math

import attrs

__all__ = [
    "Count",
    "InvalidSetting",
    "InvalidSettingType",
    "Number",
    "Seconds",
    "SettingKind",
    "Share",
    "Switch",
    "check_argument",
]


class InvalidSetting(ValueError):
    """
    A setting has a value it cannot take (out of range, or in conflict with
    another setting).

    :ivar setting: the field name (``"pool_size"``).
    :ivar value: the value refused.
    :ivar reason: what is wrong, without the name (``"must be an integer >=
        1"``), so the command line can say it with the option's name.
    :ivar owner: the class or function whose argument it is, when it is not
        a configuration field (``"ExponentialBackoff"``); it starts the
        message.
    """

    def __init__(
        self,
        setting: str,
        value: object,
        reason: str,
        show_value: bool = True,
        *,
        owner: str | None = None,
    ) -> None:
        self.setting = setting
        self.value = value
        self.reason = reason
        self.owner = owner
        self.show_value = show_value
        message = f"{setting} {reason}"
        if owner is not None:
            message = f"{owner}: {message}"
        if show_value:
            message += f", got {value!r}"
        super().__init__(message)


class InvalidSettingType(InvalidSetting, TypeError):
    """
    A setting was given a value of the wrong type (a bool or a string where
    a number belongs, ``None`` where it has no meaning).  Also a
    :exc:`TypeError`.
    """


# -- kinds of settings ---------------------------------------------------------------


class SettingKind:
    """
    One sort of value: how it is checked, read from the command line and
    shown.
    """

    #: the placeholder in ``--help`` and the docs (``--pool-size N``)
    metavar = "VALUE"

    def check(self, name: str, value: object) -> None:
        """
        :raises InvalidSetting: if ``value`` is not acceptable.
        """
        raise NotImplementedError

    def expects(self, cli: bool) -> str:
        """
        What is accepted, as the end of "NAME must be ...".
        """
        raise NotImplementedError

    def show(self, value: object, cli: bool) -> str:
        """
        ``value`` as written in docs (``cli=False``) or on the command line.
        """
        return repr(value)

    def parse(self, text: str) -> object:
        """
        The value a command-line argument stands for.

        :raises ValueError: if ``text`` is not of this kind (the range is
            checked by :meth:`check` afterwards).
        """
        raise ValueError(text)


@attrs.frozen
class Count(SettingKind):
    """
    An integer >= ``minimum`` (bools refused); with ``optional``, also
    ``None`` (``word`` on the command line: ``off``, or ``auto`` where
    ``None`` means "derived from other settings").
    """

    minimum: int = 1
    metavar: str = "N"  # type: ignore[misc]
    optional: bool = False
    word: str = "off"

    def expects(self, cli: bool) -> str:
        text = f"must be an integer >= {self.minimum}"
        if self.optional:
            text += f" or {self.word!r}" if cli else " or None"
        return text

    def check(self, name: str, value: object) -> None:
        if value is None and self.optional:
            return
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidSettingType(name, value, self.expects(False))
        if value < self.minimum:
            raise InvalidSetting(name, value, self.expects(False))

    def show(self, value: object, cli: bool) -> str:
        if value is None:
            return self.word if cli else "None"
        return str(value)

    def parse(self, text: str) -> object:
        if self.optional and text.strip().lower() in (self.word, "none", ""):
            return None
        return int(text.strip())


@attrs.frozen
class Share(SettingKind):
    """
    A fraction from 0 to 1 inclusive (bools and strings refused).
    """

    metavar: str = "F"  # type: ignore[misc]

    def expects(self, cli: bool) -> str:
        return "must be a number from 0 to 1"

    def check(self, name: str, value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidSettingType(name, value, self.expects(False))
        if not 0 <= value <= 1:
            raise InvalidSetting(name, value, self.expects(False))

    def show(self, value: object, cli: bool) -> str:
        assert isinstance(value, (int, float))
        return f"{value:g}"

    def parse(self, text: str) -> object:
        return float(text)


@attrs.frozen
class Seconds(SettingKind):
    """
    A positive, finite number of seconds; with ``optional``, also ``None``
    (``off`` on the command line) for "no limit" / "disabled".
    """

    optional: bool = False
    metavar: str = "S"  # type: ignore[misc]

    def expects(self, cli: bool) -> str:
        text = "must be a positive, finite number of seconds"
        if self.optional:
            text += " or 'off'" if cli else " or None"
        return text

    def check(self, name: str, value: object) -> None:
        if value is None and self.optional:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidSettingType(name, value, self.expects(False))
        # Written as a positive so that NaN fails it.
        if not (value > 0 and math.isfinite(value)):
            raise InvalidSetting(name, value, self.expects(False))

    def show(self, value: object, cli: bool) -> str:
        if value is None:
            return "off" if cli else "None"
        assert isinstance(value, (int, float))
        return f"{value:g}"

    def parse(self, text: str) -> object:
        if self.optional and text.strip().lower() in ("off", "none", ""):
            return None
        return float(text)


@attrs.frozen
class Switch(SettingKind):
    """
    ``True`` or ``False``; on the command line, a flag.
    """

    metavar: str = ""  # type: ignore[misc]

    def expects(self, cli: bool) -> str:
        return "must be True or False"

    def check(self, name: str, value: object) -> None:
        if not isinstance(value, bool):
            raise InvalidSettingType(name, value, self.expects(False))

    def show(self, value: object, cli: bool) -> str:
        return str(value)


@attrs.frozen
class Number(SettingKind):
    """
    A finite number above ``minimum`` (or at least it, with ``inclusive``),
    and at most ``maximum`` when given; bools and strings refused.  For
    arguments whose range is not one of the other kinds' (a growth factor
    >= 1, a delay that may be 0).  With ``optional``, also ``None``
    (``off`` on the command line).

    :ivar bound: the name of the argument ``minimum`` comes from, when it is
        one (``max_delay >= initial``), shown in the message.
    """

    minimum: float = 0.0
    inclusive: bool = False
    maximum: float | None = None
    bound: str | None = None
    metavar: str = "X"  # type: ignore[misc]
    optional: bool = False

    def expects(self, cli: bool) -> str:
        text = self._range()
        if self.optional:
            text += " or 'off'" if cli else " or None"
        return text

    def _range(self) -> str:
        if self.maximum is not None:
            low = f"{self.minimum:g}" if self.inclusive else f"above {self.minimum:g}"
            return f"must be between {low} and {self.maximum:g} inclusive"
        sign = ">=" if self.inclusive else ">"
        low = f"{self.minimum:g}"
        if self.bound is not None:
            low = f"{self.bound} ({self.minimum!r})"
        return f"must be a finite number {sign} {low}"

    def check(self, name: str, value: object) -> None:
        if value is None and self.optional:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidSettingType(name, value, self.expects(False))
        # Written as positives so that NaN fails them.
        low_ok = value >= self.minimum if self.inclusive else value > self.minimum
        high_ok = (
            math.isfinite(value) if self.maximum is None else value <= self.maximum
        )
        if not (low_ok and high_ok):
            raise InvalidSetting(name, value, self.expects(False))

    def show(self, value: object, cli: bool) -> str:
        if value is None:
            return "off" if cli else "None"
        assert isinstance(value, (int, float))
        return f"{value:g}"

    def parse(self, text: str) -> object:
        if self.optional and text.strip().lower() in ("off", "none", ""):
            return None
        return float(text)


def check_argument(
    kind: SettingKind, name: str, value: object, owner: str | None = None
) -> None:
    """
    Check the argument ``name`` of ``owner`` (a class or function name) as
    a ``kind``: the one way arguments outside the configuration classes are
    checked, so their errors read like the settings' ones.

    :raises InvalidSettingType: a value of the wrong type (a
        :exc:`TypeError`, and a :exc:`ValueError`).
    :raises InvalidSetting: a value out of range (a :exc:`ValueError`).
    """
    try:
        kind.check(name, value)
    except InvalidSetting as e:
        if owner is None:
            raise
        raise type(e)(e.setting, e.value, e.reason, e.show_value, owner=owner) from None
