"""Compilation backends; importing this package registers them."""

from effc.backends.runner.vm_runner import use_all_cpus

use_all_cpus()
