"""The real-VM test bed: Debian guests booted under QEMU in the simulated VPC.

Beside the namespace test bed (:class:`~eni_guest_lab.vm.SimVM`), whose cloud it shares: the
same vpc namespace, source check, metadata simulator and far host, but the VM is a real one,
with systemd as PID 1, udev binding virtio NICs and the distro's NetworkManager.

* image.py: guest images from Debian's packages (debootstrap), cached by a hash of the recipe;
  eni-guest installed from its wheel per run;
* qemu.py: one QEMU under software emulation, QMP (hot-plug) and the guest agent (commands);
* bed.py: :class:`RealVM`, the VM wired into the vpc, with probes through the source check.

Lab code only: the agent never imports it. ``python -m eni_guest_lab.realvm build`` builds
(or finds) the images ahead of a test run.
"""
