-- The sender's own inbox seq of each message, so an idempotent retry is
-- answered without searching the sender's inbox.
ALTER TABLE messages ADD COLUMN sender_seq INTEGER;
