-- notify_on: the statement-level NOTIFY trigger back on (after the trigger benchmark).
alter table postpub.versions enable trigger _900_notify
