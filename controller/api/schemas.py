"""Request bodies of the API. Responses are the services' own dataclasses."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from controller.services.context import Role
from protocol.messages import SizeClass, TemperatureClass

Phone = Annotated[str, StringConstraints(pattern=r"^\+?[0-9]{6,15}$")]
LockerIdField = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
Tracking = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{4,64}$")]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DepositIn(Body):
    tracking_number: Tracking
    locker_id: LockerIdField
    size: SizeClass
    temperature: TemperatureClass = TemperatureClass.AMBIENT
    recipient_phone: Phone
    recipient_name: str | None = Field(default=None, max_length=100)
    village_site_id: int | None = None
    consent_method: str | None = Field(
        default=None,
        description="Set when you have just obtained the recipient's consent: sms_reply, app, "
        "phone_call, in_person or written. Without it, a recipient with no consent on record "
        "is refused (consent_required).",
    )


class AgentCollectIn(Body):
    code: Annotated[str, StringConstraints(pattern=r"^[0-9]{6}$")] | None = None
    standing: bool = False


class OutboundIn(Body):
    carrier_code: str = Field(min_length=1, max_length=32)
    sender_phone: Phone
    sender_name: str | None = Field(default=None, max_length=100)
    locker_id: LockerIdField
    size: SizeClass
    temperature: TemperatureClass = TemperatureClass.AMBIENT
    reference: Tracking | None = None


class AuthoriseIn(Body):
    recipient_phone: Phone
    method: str = Field(min_length=1, max_length=32)


class CompartmentIn(Body):
    label: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]{1,8}$")]
    size: SizeClass
    temperature: TemperatureClass = TemperatureClass.AMBIENT


class LockerIn(Body):
    locker_id: LockerIdField
    site_id: int
    name: str = Field(min_length=1, max_length=200)
    address: str | None = Field(default=None, max_length=300)
    compartments: list[CompartmentIn] = Field(default_factory=list, max_length=200)


class ServiceIn(Body):
    in_service: bool
    reason: str | None = Field(default=None, max_length=200)


class SiteIn(Body):
    kind: str = Field(pattern=r"^(county|township|village)$")
    name: str = Field(min_length=1, max_length=200)
    parent_id: int | None = None
    division_code: str | None = Field(default=None, pattern=r"^[0-9]{6,12}$")


class CarrierIn(Body):
    code: str = Field(pattern=r"^[a-z0-9_-]{1,32}$")
    name: str = Field(min_length=1, max_length=200)


class QuotaIn(Body):
    carrier_id: int
    max_compartments: int | None = Field(default=None, ge=0, le=200)


class UserIn(Body):
    name: str = Field(min_length=1, max_length=200)
    role: Role
    carrier_code: str | None = None
    village_ids: list[int] = Field(default_factory=list)
    phone: Phone | None = None


class TokenIn(Body):
    label: str = Field(min_length=1, max_length=100)
    ttl_days: int | None = Field(default=None, ge=1, le=3650)


class ConsentIn(Body):
    phone: Phone
    method: str
    village_site_id: int | None = None
