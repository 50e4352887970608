//! The app-server's edge: each of its own errors gets its Wildfire code here,
//! once, and travels as [`ApiError::Refused`].

use super::account::AccountError;
use super::qr::QrError;
use super::sms::SmsError;
use crate::http::ApiError;
use crate::wire::http::code;

impl From<SmsError> for ApiError {
    fn from(e: SmsError) -> Self {
        let code = match e {
            SmsError::TooOften { .. } | SmsError::TooManyToday(_) => code::SEND_TOO_OFTEN,
            SmsError::Expired | SmsError::Burned => code::CODE_EXPIRED,
            SmsError::NoCode | SmsError::Wrong { .. } | SmsError::WrongAndBurned => {
                code::CODE_WRONG
            }
            SmsError::Unavailable(_) => code::SERVER_ERROR,
        };
        ApiError::refused(code, e)
    }
}

impl From<QrError> for ApiError {
    fn from(e: QrError) -> Self {
        let code = match e {
            QrError::Missing => code::SESSION_EXPIRED,
            QrError::NotScanned => code::SESSION_NOT_SCANNED,
            QrError::Cancelled => code::SESSION_CANCELLED,
            QrError::AlreadyConfirmed | QrError::WrongUser | QrError::AlreadyPolling => {
                code::INVALID_PARAMETER
            }
            QrError::Full(_) | QrError::FullForClient(_) | QrError::FullForUser(_) => {
                code::SEND_TOO_OFTEN
            }
            QrError::Unavailable(_) => code::SERVER_ERROR,
        };
        ApiError::refused(code, e)
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        let code = match e {
            AccountError::CodeExpired => code::CODE_EXPIRED,
            AccountError::NoCode | AccountError::CodeWrong(_) | AccountError::WrongCredentials => {
                code::CODE_WRONG
            }
            AccountError::WrongOldPassword => code::PASSWORD_WRONG,
            AccountError::Locked(_) => code::TOO_MANY_FAILURES,
            AccountError::WeakPassword => code::WEAK_PASSWORD,
            AccountError::NameTaken(_) => code::NAME_TAKEN,
            AccountError::NoPermission(_) => code::NO_PERMISSION,
            AccountError::NoAnnouncement(_) => code::NO_ANNOUNCEMENT,
        };
        ApiError::refused(code, e)
    }
}
