"""Bounces: what happens after the relay's 250.

``mailgate bounces`` (:mod:`mailgate.bounces.service`) takes delivery status notifications and
non-delivery reports in two ways, an SMTP listener for the bounce address
(:mod:`~mailgate.bounces.listener`) and an IMAP poller for a mailbox
(:mod:`~mailgate.bounces.imap`). Each message goes to :class:`~mailgate.bounces.recorder.
Recorder`, which reads it (:mod:`~mailgate.bounces.report`), finds the e-mail it is about (the
VERP return path of :mod:`~mailgate.bounces.verp`, else the original Message-ID), and records
each recipient's bounce in the status store, where the status becomes ``Bounced`` or
``PartlyBounced`` (:mod:`mailgate.status.bounces`) and hard bounces suppress their address.
The process needs Redis only: a changed status's delivery report is put on the report due set,
which the workers' schedulers publish.
"""
