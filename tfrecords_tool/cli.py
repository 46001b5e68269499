"""Every tool's command line: absl flags made from a config dataclass, one exit convention.

A tool's settings are one dataclass whose fields carry their help text (`setting(...)`);
`define_flags` turns the fields into absl flags (so `--flagfile` works too), `from_flags` turns
the parsed flags back into the dataclass, and `run` calls the tool's main with errors mapped to
the exit statuses of `tfrecords_tool.errors`. Library code takes the dataclass, never flags.
"""
import dataclasses
import sys
import typing

from absl import flags
from absl import logging
import tensorflow as tf

from tfrecords_tool import errors
from tfrecords_tool import filesystems


def setting(default, help, *, choices=None, lower_bound=None, upper_bound=None):
    """A config field with what its flag needs: help text, allowed values, bounds."""
    return dataclasses.field(default=default, metadata={
        "help": help, "choices": choices, "lower_bound": lower_bound, "upper_bound": upper_bound})


def _kind(annotation):
    """The flag type of a field annotation: Optional[X] -> X; List[str] -> list."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Union and len(args) == 1:
        return _kind(args[0])
    if typing.get_origin(annotation) in (list, tuple) or annotation in (list, tuple):
        return list
    return annotation


def define_flags(config_class, flag_values=flags.FLAGS):
    """One absl flag per field of `config_class`, named like the field."""
    hints = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        meta, kind = field.metadata, _kind(hints[field.name])
        args = dict(name=field.name, default=field.default, help=meta.get("help", ""),
                    flag_values=flag_values)
        if meta.get("choices"):
            flags.DEFINE_enum(enum_values=list(meta["choices"]), **args)
        elif kind is bool:
            flags.DEFINE_bool(**args)
        elif kind in (int, float):
            define = flags.DEFINE_integer if kind is int else flags.DEFINE_float
            define(lower_bound=meta.get("lower_bound"), upper_bound=meta.get("upper_bound"), **args)
        elif kind is list:
            flags.DEFINE_list(**{**args, "default": None if field.default is None
                                 else list(field.default)})
        else:
            flags.DEFINE_string(**args)


def from_flags(config_class, flag_values=flags.FLAGS, **overrides):
    """`config_class` filled from the parsed flags (and `overrides`)."""
    values = {field.name: flag_values[field.name].value for field in dataclasses.fields(config_class)}
    return config_class(**{**values, **overrides})


def _parse_flags(argv):
    """absl's parser, but a wrong flag exits with NOTHING_DONE like every other usage error."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        print(f"error: {e}\nPass --helpfull to see the flags.", file=sys.stderr)
        sys.exit(errors.NOTHING_DONE)


def call(function, *args):
    """`function(*args)`'s exit status: its return value (None: OK), or a `ToolError`'s status
    (OSError, a file system's tf.errors.OpError: NOTHING_DONE) after printing it as one
    `error: ...` line on stderr."""
    try:
        return function(*args) or errors.OK
    except errors.ToolError as e:
        logging.debug("%r", e)
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except (OSError, tf.errors.OpError) as e:  # a file system's error: its message, no traceback
        print(f"error: {e.message if isinstance(e, tf.errors.OpError) else e}", file=sys.stderr)
        return errors.NOTHING_DONE


def run(main):
    """Runs `main(argv)` as a command: parses flags (a wrong one exits NOTHING_DONE), exits with
    `call(main, argv)`'s status, and applies filesystems.run's s3:// fix."""
    filesystems.run(lambda argv: sys.exit(call(main, argv)), flags_parser=_parse_flags)


def no_arguments(argv):
    """For tools that take flags only."""
    if len(argv) > 1:
        raise errors.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
