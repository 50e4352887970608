-- A member's group history is what reached their inbox (their membership
-- periods); this index answers "did this message reach this user" directly.
CREATE INDEX inbox_message ON inbox(user_id, message_id);
