-- 008: validates 007's integrations_id_format against the rows that were there before it. They
-- all passed the rule it replaced, which is the same, so this only records that in the catalog.
-- It reads the whole table, under SHARE UPDATE EXCLUSIVE: workers keep reading and writing
-- meanwhile (only another schema change or a VACUUM of the table would wait). Its own migration,
-- because in 007's transaction the scan would have run under 007's ACCESS EXCLUSIVE lock.

ALTER TABLE integrations VALIDATE CONSTRAINT integrations_id_format;
