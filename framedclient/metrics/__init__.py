"""
In-process metrics; the implementation moves into the modules of this
package one piece at a time.
"""

from framedclient.metrics.recorder import *  # noqa: F403
from framedclient.metrics.recorder import __all__  # noqa: F401
