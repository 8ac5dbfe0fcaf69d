-- notify_off: the NOTIFY trigger off, to measure inserts without it.
alter table postpub.versions disable trigger _900_notify
