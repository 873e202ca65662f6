//! VMCS field encodings (Intel SDM vol. 3C, ch. 25 "Virtual Machine Control
//! Structures" — ch. 24 in older editions — and appendix B "Field Encoding in
//! VMCS").
//!
//! Software never sees the VMCS layout: VMREAD and VMWRITE name a field by a
//! 32-bit encoding, and the encoding itself says what the field is
//! (SDM 25.11.2 "VMREAD, VMWRITE, and Encodings of VMCS Fields"):
//!
//! | bits  | meaning                                                        |
//! |-------|----------------------------------------------------------------|
//! | 0     | access type: 0 full, 1 high (upper half of a 64-bit field)     |
//! | 9:1   | index                                                          |
//! | 11:10 | type: 0 control, 1 VM-exit information, 2 guest, 3 host state  |
//! | 12    | reserved, 0                                                    |
//! | 14:13 | width: 0 16-bit, 1 64-bit, 2 32-bit, 3 natural width           |
//! | 31:15 | reserved, 0                                                    |
//!
//! [`VmcsField`] lists every field this model knows, one variant per
//! encoding, with the high half of each 64-bit field as its own variant
//! (`...High`), so a VMREAD of `0x2001` and one of `0x2000` are both
//! representable. Width, kind and access type are derived from the encoding,
//! never stored beside it, so the table cannot disagree with itself.

use core::fmt;

/// Width of a VMCS field (encoding bits 14:13).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Width {
    /// 16-bit field.
    Word16,
    /// 64-bit field (accessible as a whole or, with access type "high", as
    /// its upper 32 bits).
    Word64,
    /// 32-bit field.
    Word32,
    /// Natural-width field: 64 bits on processors that support Intel 64.
    Natural,
}

impl Width {
    /// Decodes bits 14:13 of a field encoding.
    pub const fn from_encoding(encoding: u32) -> Width {
        match (encoding >> 13) & 3 {
            0 => Width::Word16,
            1 => Width::Word64,
            2 => Width::Word32,
            _ => Width::Natural,
        }
    }

    /// Number of bits a field of this width holds on a 64-bit processor.
    pub const fn bits(self) -> u32 {
        match self {
            Width::Word16 => 16,
            Width::Word32 => 32,
            Width::Word64 | Width::Natural => 64,
        }
    }

    /// Mask of the bits a field of this width holds.
    pub const fn mask(self) -> u64 {
        match self {
            Width::Word16 => 0xffff,
            Width::Word32 => 0xffff_ffff,
            Width::Word64 | Width::Natural => u64::MAX,
        }
    }
}

/// Type of a VMCS field (encoding bits 11:10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldKind {
    /// VM-execution, VM-exit and VM-entry control fields.
    Control,
    /// VM-exit information fields, read-only unless IA32_VMX_MISC bit 29
    /// allows VMWRITE to them.
    ReadOnlyData,
    /// Guest-state area.
    GuestState,
    /// Host-state area.
    HostState,
}

impl FieldKind {
    /// Decodes bits 11:10 of a field encoding.
    pub const fn from_encoding(encoding: u32) -> FieldKind {
        match (encoding >> 10) & 3 {
            0 => FieldKind::Control,
            1 => FieldKind::ReadOnlyData,
            2 => FieldKind::GuestState,
            _ => FieldKind::HostState,
        }
    }
}

/// The 14 meaningful bits of an encoding (width 14:13, type 11:10, index
/// and access type 9:0), packed densely.
const fn slot_key(encoding: u32) -> usize {
    ((((encoding >> 13) & 3) << 12) | (((encoding >> 10) & 3) << 10) | (encoding & 0x3ff)) as usize
}

/// [`VmcsField::slot`] of every encoding, by [`slot_key`]; built at
/// compile time from [`VmcsField::ALL`]. A `const` so that
/// [`VmcsField::slot_const`] works in constant expressions; run-time
/// lookups read the [`SLOTS`] copy.
#[allow(clippy::large_const_arrays)]
const SLOT_TABLE: [u16; 1 << 14] = {
    let mut t = [u16::MAX; 1 << 14];
    let mut i = 0;
    while i < VmcsField::ALL.len() {
        t[slot_key(VmcsField::ALL[i].encoding())] = i as u16;
        i += 1;
    }
    t
};

/// Run-time copy of [`SLOT_TABLE`].
static SLOTS: [u16; 1 << 14] = SLOT_TABLE;

/// Bits of a field encoding that must be zero (bit 12 and bits 31:15).
pub const ENCODING_RESERVED: u32 = 0xffff_9000;

/// Bit 0 of an encoding: access to the high 32 bits of a 64-bit field.
pub const ENCODING_HIGH: u32 = 1;

macro_rules! vmcs_fields {
    ($(
        [$width:ident, $kind:ident] {
            $( $(#[doc = $doc:literal])* $variant:ident = $enc:literal, $name:literal; )*
        }
    )*) => {
        /// A VMCS field, by the encoding VMREAD and VMWRITE use (SDM
        /// appendix B "Field Encoding in VMCS"). The discriminant is the
        /// encoding.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u32)]
        pub enum VmcsField {
            $( $( $(#[doc = $doc])* $variant = $enc, )* )*
        }

        impl VmcsField {
            /// Every field, in the order of SDM appendix B: grouped by width
            /// and type, by encoding within a group.
            pub const ALL: &'static [VmcsField] = &[ $( $( VmcsField::$variant, )* )* ];

            /// The field with this encoding, or `None` for an encoding this
            /// model does not support (VMREAD/VMWRITE then fail with
            /// VM-instruction error 12).
            pub const fn from_encoding(encoding: u32) -> Option<VmcsField> {
                match encoding {
                    $( $( $enc => Some(VmcsField::$variant), )* )*
                    _ => None,
                }
            }

            /// [`VmcsField::from_encoding`] for run time: one load from the
            /// slot table and a compare, rather than a search through every
            /// encoding (VMREAD and VMWRITE decode one per execution).
            #[inline]
            pub fn lookup(encoding: u32) -> Option<VmcsField> {
                if encoding & ENCODING_RESERVED != 0 {
                    return None;
                }
                let f = *VmcsField::ALL.get(usize::from(SLOTS[slot_key(encoding)]))?;
                (f.encoding() == encoding).then_some(f)
            }

            /// Number of fields (and of storage slots in [`crate::vmcs::Vmcs`]).
            pub const COUNT: usize = VmcsField::ALL.len();

            /// The field's position in [`VmcsField::ALL`]: a dense index
            /// for VMCS storage, so a field access is an array index
            /// rather than a search. One load from [`SLOTS`], which is
            /// indexed by the encoding's width, type and index bits.
            #[inline(always)]
            pub fn slot(self) -> usize {
                SLOTS[slot_key(self.encoding())] as usize
            }

            /// The slot of the full field: [`VmcsField::slot`] of
            /// [`VmcsField::full`], without its search (bit 0 is the only
            /// difference between a high access and its field, and it is
            /// clear in every other encoding).
            #[inline(always)]
            pub fn full_slot(self) -> usize {
                SLOTS[slot_key(self.encoding() & !ENCODING_HIGH)] as usize
            }

            /// [`VmcsField::slot`] for constant expressions (compile-time
            /// slot numbers for code that moves many fields at once).
            pub const fn slot_const(self) -> usize {
                SLOT_TABLE[slot_key(self.encoding())] as usize
            }

            /// The field's name in SDM terms, snake_case; stable, for traces
            /// and diagnostics. High halves end in `_high`.
            pub const fn name(self) -> &'static str {
                match self {
                    $( $( VmcsField::$variant => $name, )* )*
                }
            }

            /// Width and type of the appendix-B table group the field is
            /// listed in, for checking the encodings against it.
            #[cfg(test)]
            const fn listed_as(self) -> (Width, FieldKind) {
                match self {
                    $( $( VmcsField::$variant => (Width::$width, FieldKind::$kind), )* )*
                }
            }
        }
    };
}

vmcs_fields! {
    // 16-bit control fields (SDM B.1.1)
    [Word16, Control] {
        /// Virtual-processor identifier (VPID) tagging TLB entries of this guest.
        VirtualProcessorId = 0x0000, "virtual_processor_id";
        /// Vector whose arrival triggers posted-interrupt processing.
        PostedInterruptNotificationVector = 0x0002, "posted_interrupt_notification_vector";
        /// Index of the current EPTP in the EPTP list (EPTP switching, #VE).
        EptpIndex = 0x0004, "eptp_index";
        /// Hypervisor-managed linear-address translation prefix size.
        HlatPrefixSize = 0x0006, "hlat_prefix_size";
        /// Last valid index of the PID-pointer table (IPI virtualization).
        LastPidPointerIndex = 0x0008, "last_pid_pointer_index";
    }
    // 16-bit guest-state fields (SDM B.1.2)
    [Word16, GuestState] {
        /// Guest ES selector.
        GuestEsSelector = 0x0800, "guest_es_selector";
        /// Guest CS selector.
        GuestCsSelector = 0x0802, "guest_cs_selector";
        /// Guest SS selector.
        GuestSsSelector = 0x0804, "guest_ss_selector";
        /// Guest DS selector.
        GuestDsSelector = 0x0806, "guest_ds_selector";
        /// Guest FS selector.
        GuestFsSelector = 0x0808, "guest_fs_selector";
        /// Guest GS selector.
        GuestGsSelector = 0x080a, "guest_gs_selector";
        /// Guest LDTR selector.
        GuestLdtrSelector = 0x080c, "guest_ldtr_selector";
        /// Guest TR selector.
        GuestTrSelector = 0x080e, "guest_tr_selector";
        /// Guest interrupt status: RVI in bits 7:0, SVI in bits 15:8 (virtual-interrupt delivery).
        GuestInterruptStatus = 0x0810, "guest_interrupt_status";
        /// Index of the next free entry in the page-modification log.
        PmlIndex = 0x0812, "pml_index";
        /// Guest user-interrupt notification vector.
        GuestUinv = 0x0814, "guest_uinv";
    }
    // 16-bit host-state fields (SDM B.1.3)
    [Word16, HostState] {
        /// Host ES selector.
        HostEsSelector = 0x0c00, "host_es_selector";
        /// Host CS selector.
        HostCsSelector = 0x0c02, "host_cs_selector";
        /// Host SS selector.
        HostSsSelector = 0x0c04, "host_ss_selector";
        /// Host DS selector.
        HostDsSelector = 0x0c06, "host_ds_selector";
        /// Host FS selector.
        HostFsSelector = 0x0c08, "host_fs_selector";
        /// Host GS selector.
        HostGsSelector = 0x0c0a, "host_gs_selector";
        /// Host TR selector.
        HostTrSelector = 0x0c0c, "host_tr_selector";
    }
    // 64-bit control fields (SDM B.2.1)
    [Word64, Control] {
        /// Physical address of I/O bitmap A (ports 0000h-7FFFh).
        IoBitmapA = 0x2000, "io_bitmap_a";
        /// High 32 bits of [`VmcsField::IoBitmapA`].
        IoBitmapAHigh = 0x2001, "io_bitmap_a_high";
        /// Physical address of I/O bitmap B (ports 8000h-FFFFh).
        IoBitmapB = 0x2002, "io_bitmap_b";
        /// High 32 bits of [`VmcsField::IoBitmapB`].
        IoBitmapBHigh = 0x2003, "io_bitmap_b_high";
        /// Physical address of the MSR bitmaps page.
        MsrBitmap = 0x2004, "msr_bitmap";
        /// High 32 bits of [`VmcsField::MsrBitmap`].
        MsrBitmapHigh = 0x2005, "msr_bitmap_high";
        /// Physical address of the VM-exit MSR-store area.
        ExitMsrStoreAddress = 0x2006, "vm_exit_msr_store_address";
        /// High 32 bits of [`VmcsField::ExitMsrStoreAddress`].
        ExitMsrStoreAddressHigh = 0x2007, "vm_exit_msr_store_address_high";
        /// Physical address of the VM-exit MSR-load area.
        ExitMsrLoadAddress = 0x2008, "vm_exit_msr_load_address";
        /// High 32 bits of [`VmcsField::ExitMsrLoadAddress`].
        ExitMsrLoadAddressHigh = 0x2009, "vm_exit_msr_load_address_high";
        /// Physical address of the VM-entry MSR-load area.
        EntryMsrLoadAddress = 0x200a, "vm_entry_msr_load_address";
        /// High 32 bits of [`VmcsField::EntryMsrLoadAddress`].
        EntryMsrLoadAddressHigh = 0x200b, "vm_entry_msr_load_address_high";
        /// Executive-VMCS pointer (dual-monitor treatment of SMIs and SMM).
        ExecutiveVmcsPointer = 0x200c, "executive_vmcs_pointer";
        /// High 32 bits of [`VmcsField::ExecutiveVmcsPointer`].
        ExecutiveVmcsPointerHigh = 0x200d, "executive_vmcs_pointer_high";
        /// Physical address of the page-modification log.
        PmlAddress = 0x200e, "pml_address";
        /// High 32 bits of [`VmcsField::PmlAddress`].
        PmlAddressHigh = 0x200f, "pml_address_high";
        /// Offset added to the TSC when the guest reads it.
        TscOffset = 0x2010, "tsc_offset";
        /// High 32 bits of [`VmcsField::TscOffset`].
        TscOffsetHigh = 0x2011, "tsc_offset_high";
        /// Physical address of the virtual-APIC page.
        VirtualApicAddress = 0x2012, "virtual_apic_address";
        /// High 32 bits of [`VmcsField::VirtualApicAddress`].
        VirtualApicAddressHigh = 0x2013, "virtual_apic_address_high";
        /// Physical address of the APIC-access page.
        ApicAccessAddress = 0x2014, "apic_access_address";
        /// High 32 bits of [`VmcsField::ApicAccessAddress`].
        ApicAccessAddressHigh = 0x2015, "apic_access_address_high";
        /// Physical address of the posted-interrupt descriptor.
        PostedInterruptDescriptorAddress = 0x2016, "posted_interrupt_descriptor_address";
        /// High 32 bits of [`VmcsField::PostedInterruptDescriptorAddress`].
        PostedInterruptDescriptorAddressHigh = 0x2017, "posted_interrupt_descriptor_address_high";
        /// VM-function controls (bit 0: EPTP switching).
        VmFunctionControls = 0x2018, "vm_function_controls";
        /// High 32 bits of [`VmcsField::VmFunctionControls`].
        VmFunctionControlsHigh = 0x2019, "vm_function_controls_high";
        /// EPT pointer (EPTP).
        EptPointer = 0x201a, "ept_pointer";
        /// High 32 bits of [`VmcsField::EptPointer`].
        EptPointerHigh = 0x201b, "ept_pointer_high";
        /// EOI-exit bitmap for vectors 0-63.
        EoiExitBitmap0 = 0x201c, "eoi_exit_bitmap_0";
        /// High 32 bits of [`VmcsField::EoiExitBitmap0`].
        EoiExitBitmap0High = 0x201d, "eoi_exit_bitmap_0_high";
        /// EOI-exit bitmap for vectors 64-127.
        EoiExitBitmap1 = 0x201e, "eoi_exit_bitmap_1";
        /// High 32 bits of [`VmcsField::EoiExitBitmap1`].
        EoiExitBitmap1High = 0x201f, "eoi_exit_bitmap_1_high";
        /// EOI-exit bitmap for vectors 128-191.
        EoiExitBitmap2 = 0x2020, "eoi_exit_bitmap_2";
        /// High 32 bits of [`VmcsField::EoiExitBitmap2`].
        EoiExitBitmap2High = 0x2021, "eoi_exit_bitmap_2_high";
        /// EOI-exit bitmap for vectors 192-255.
        EoiExitBitmap3 = 0x2022, "eoi_exit_bitmap_3";
        /// High 32 bits of [`VmcsField::EoiExitBitmap3`].
        EoiExitBitmap3High = 0x2023, "eoi_exit_bitmap_3_high";
        /// Physical address of the EPTP list (EPTP switching).
        EptpListAddress = 0x2024, "eptp_list_address";
        /// High 32 bits of [`VmcsField::EptpListAddress`].
        EptpListAddressHigh = 0x2025, "eptp_list_address_high";
        /// Physical address of the VMREAD bitmap (VMCS shadowing).
        VmreadBitmapAddress = 0x2026, "vmread_bitmap_address";
        /// High 32 bits of [`VmcsField::VmreadBitmapAddress`].
        VmreadBitmapAddressHigh = 0x2027, "vmread_bitmap_address_high";
        /// Physical address of the VMWRITE bitmap (VMCS shadowing).
        VmwriteBitmapAddress = 0x2028, "vmwrite_bitmap_address";
        /// High 32 bits of [`VmcsField::VmwriteBitmapAddress`].
        VmwriteBitmapAddressHigh = 0x2029, "vmwrite_bitmap_address_high";
        /// Physical address of the virtualization-exception (#VE) information area.
        VeInformationAddress = 0x202a, "virtualization_exception_information_address";
        /// High 32 bits of [`VmcsField::VeInformationAddress`].
        VeInformationAddressHigh = 0x202b, "virtualization_exception_information_address_high";
        /// XSS-exiting bitmap (XSAVES/XRSTORS).
        XssExitingBitmap = 0x202c, "xss_exiting_bitmap";
        /// High 32 bits of [`VmcsField::XssExitingBitmap`].
        XssExitingBitmapHigh = 0x202d, "xss_exiting_bitmap_high";
        /// ENCLS-exiting bitmap, one bit per ENCLS leaf.
        EnclsExitingBitmap = 0x202e, "encls_exiting_bitmap";
        /// High 32 bits of [`VmcsField::EnclsExitingBitmap`].
        EnclsExitingBitmapHigh = 0x202f, "encls_exiting_bitmap_high";
        /// Sub-page-permission-table pointer.
        SppTablePointer = 0x2030, "sub_page_permission_table_pointer";
        /// High 32 bits of [`VmcsField::SppTablePointer`].
        SppTablePointerHigh = 0x2031, "sub_page_permission_table_pointer_high";
        /// TSC multiplier (TSC scaling), a 16.48 fixed-point value.
        TscMultiplier = 0x2032, "tsc_multiplier";
        /// High 32 bits of [`VmcsField::TscMultiplier`].
        TscMultiplierHigh = 0x2033, "tsc_multiplier_high";
        /// Tertiary processor-based VM-execution controls.
        TertiaryProcControls = 0x2034, "tertiary_processor_based_vm_execution_controls";
        /// High 32 bits of [`VmcsField::TertiaryProcControls`].
        TertiaryProcControlsHigh = 0x2035, "tertiary_processor_based_vm_execution_controls_high";
        /// ENCLV-exiting bitmap, one bit per ENCLV leaf.
        EnclvExitingBitmap = 0x2036, "enclv_exiting_bitmap";
        /// High 32 bits of [`VmcsField::EnclvExitingBitmap`].
        EnclvExitingBitmapHigh = 0x2037, "enclv_exiting_bitmap_high";
        /// Low PASID directory address (PASID translation).
        LowPasidDirectoryAddress = 0x2038, "low_pasid_directory_address";
        /// High 32 bits of [`VmcsField::LowPasidDirectoryAddress`].
        LowPasidDirectoryAddressHigh = 0x2039, "low_pasid_directory_address_high";
        /// High PASID directory address (PASID translation).
        HighPasidDirectoryAddress = 0x203a, "high_pasid_directory_address";
        /// High 32 bits of [`VmcsField::HighPasidDirectoryAddress`].
        HighPasidDirectoryAddressHigh = 0x203b, "high_pasid_directory_address_high";
        /// Shared-EPT pointer.
        SharedEptPointer = 0x203c, "shared_ept_pointer";
        /// High 32 bits of [`VmcsField::SharedEptPointer`].
        SharedEptPointerHigh = 0x203d, "shared_ept_pointer_high";
        /// PCONFIG-exiting bitmap, one bit per PCONFIG leaf.
        PconfigExitingBitmap = 0x203e, "pconfig_exiting_bitmap";
        /// High 32 bits of [`VmcsField::PconfigExitingBitmap`].
        PconfigExitingBitmapHigh = 0x203f, "pconfig_exiting_bitmap_high";
        /// Hypervisor-managed linear-address translation pointer.
        HlatPointer = 0x2040, "hlat_pointer";
        /// High 32 bits of [`VmcsField::HlatPointer`].
        HlatPointerHigh = 0x2041, "hlat_pointer_high";
        /// Physical address of the PID-pointer table (IPI virtualization).
        PidPointerTableAddress = 0x2042, "pid_pointer_table_address";
        /// High 32 bits of [`VmcsField::PidPointerTableAddress`].
        PidPointerTableAddressHigh = 0x2043, "pid_pointer_table_address_high";
        /// Secondary VM-exit controls.
        SecondaryExitControls = 0x2044, "secondary_vm_exit_controls";
        /// High 32 bits of [`VmcsField::SecondaryExitControls`].
        SecondaryExitControlsHigh = 0x2045, "secondary_vm_exit_controls_high";
        /// IA32_SPEC_CTRL mask (virtualize IA32_SPEC_CTRL).
        SpecCtrlMask = 0x204a, "ia32_spec_ctrl_mask";
        /// High 32 bits of [`VmcsField::SpecCtrlMask`].
        SpecCtrlMaskHigh = 0x204b, "ia32_spec_ctrl_mask_high";
        /// IA32_SPEC_CTRL shadow (virtualize IA32_SPEC_CTRL).
        SpecCtrlShadow = 0x204c, "ia32_spec_ctrl_shadow";
        /// High 32 bits of [`VmcsField::SpecCtrlShadow`].
        SpecCtrlShadowHigh = 0x204d, "ia32_spec_ctrl_shadow_high";
    }
    // 64-bit read-only data fields (SDM B.2.2)
    [Word64, ReadOnlyData] {
        /// Guest-physical address that caused an EPT violation or misconfiguration.
        GuestPhysicalAddress = 0x2400, "guest_physical_address";
        /// High 32 bits of [`VmcsField::GuestPhysicalAddress`].
        GuestPhysicalAddressHigh = 0x2401, "guest_physical_address_high";
    }
    // 64-bit guest-state fields (SDM B.2.3)
    [Word64, GuestState] {
        /// VMCS link pointer (all ones when unused; the shadow VMCS with VMCS shadowing).
        VmcsLinkPointer = 0x2800, "vmcs_link_pointer";
        /// High 32 bits of [`VmcsField::VmcsLinkPointer`].
        VmcsLinkPointerHigh = 0x2801, "vmcs_link_pointer_high";
        /// Guest IA32_DEBUGCTL.
        GuestIa32Debugctl = 0x2802, "guest_ia32_debugctl";
        /// High 32 bits of [`VmcsField::GuestIa32Debugctl`].
        GuestIa32DebugctlHigh = 0x2803, "guest_ia32_debugctl_high";
        /// Guest IA32_PAT.
        GuestIa32Pat = 0x2804, "guest_ia32_pat";
        /// High 32 bits of [`VmcsField::GuestIa32Pat`].
        GuestIa32PatHigh = 0x2805, "guest_ia32_pat_high";
        /// Guest IA32_EFER.
        GuestIa32Efer = 0x2806, "guest_ia32_efer";
        /// High 32 bits of [`VmcsField::GuestIa32Efer`].
        GuestIa32EferHigh = 0x2807, "guest_ia32_efer_high";
        /// Guest IA32_PERF_GLOBAL_CTRL.
        GuestIa32PerfGlobalCtrl = 0x2808, "guest_ia32_perf_global_ctrl";
        /// High 32 bits of [`VmcsField::GuestIa32PerfGlobalCtrl`].
        GuestIa32PerfGlobalCtrlHigh = 0x2809, "guest_ia32_perf_global_ctrl_high";
        /// Guest PAE page-directory-pointer-table entry 0 (with EPT).
        GuestPdpte0 = 0x280a, "guest_pdpte0";
        /// High 32 bits of [`VmcsField::GuestPdpte0`].
        GuestPdpte0High = 0x280b, "guest_pdpte0_high";
        /// Guest PAE page-directory-pointer-table entry 1 (with EPT).
        GuestPdpte1 = 0x280c, "guest_pdpte1";
        /// High 32 bits of [`VmcsField::GuestPdpte1`].
        GuestPdpte1High = 0x280d, "guest_pdpte1_high";
        /// Guest PAE page-directory-pointer-table entry 2 (with EPT).
        GuestPdpte2 = 0x280e, "guest_pdpte2";
        /// High 32 bits of [`VmcsField::GuestPdpte2`].
        GuestPdpte2High = 0x280f, "guest_pdpte2_high";
        /// Guest PAE page-directory-pointer-table entry 3 (with EPT).
        GuestPdpte3 = 0x2810, "guest_pdpte3";
        /// High 32 bits of [`VmcsField::GuestPdpte3`].
        GuestPdpte3High = 0x2811, "guest_pdpte3_high";
        /// Guest IA32_BNDCFGS.
        GuestIa32Bndcfgs = 0x2812, "guest_ia32_bndcfgs";
        /// High 32 bits of [`VmcsField::GuestIa32Bndcfgs`].
        GuestIa32BndcfgsHigh = 0x2813, "guest_ia32_bndcfgs_high";
        /// Guest IA32_RTIT_CTL.
        GuestIa32RtitCtl = 0x2814, "guest_ia32_rtit_ctl";
        /// High 32 bits of [`VmcsField::GuestIa32RtitCtl`].
        GuestIa32RtitCtlHigh = 0x2815, "guest_ia32_rtit_ctl_high";
        /// Guest IA32_LBR_CTL.
        GuestIa32LbrCtl = 0x2816, "guest_ia32_lbr_ctl";
        /// High 32 bits of [`VmcsField::GuestIa32LbrCtl`].
        GuestIa32LbrCtlHigh = 0x2817, "guest_ia32_lbr_ctl_high";
        /// Guest IA32_PKRS.
        GuestIa32Pkrs = 0x2818, "guest_ia32_pkrs";
        /// High 32 bits of [`VmcsField::GuestIa32Pkrs`].
        GuestIa32PkrsHigh = 0x2819, "guest_ia32_pkrs_high";
    }
    // 64-bit host-state fields (SDM B.2.4)
    [Word64, HostState] {
        /// Host IA32_PAT.
        HostIa32Pat = 0x2c00, "host_ia32_pat";
        /// High 32 bits of [`VmcsField::HostIa32Pat`].
        HostIa32PatHigh = 0x2c01, "host_ia32_pat_high";
        /// Host IA32_EFER.
        HostIa32Efer = 0x2c02, "host_ia32_efer";
        /// High 32 bits of [`VmcsField::HostIa32Efer`].
        HostIa32EferHigh = 0x2c03, "host_ia32_efer_high";
        /// Host IA32_PERF_GLOBAL_CTRL.
        HostIa32PerfGlobalCtrl = 0x2c04, "host_ia32_perf_global_ctrl";
        /// High 32 bits of [`VmcsField::HostIa32PerfGlobalCtrl`].
        HostIa32PerfGlobalCtrlHigh = 0x2c05, "host_ia32_perf_global_ctrl_high";
        /// Host IA32_PKRS.
        HostIa32Pkrs = 0x2c06, "host_ia32_pkrs";
        /// High 32 bits of [`VmcsField::HostIa32Pkrs`].
        HostIa32PkrsHigh = 0x2c07, "host_ia32_pkrs_high";
    }
    // 32-bit control fields (SDM B.3.1)
    [Word32, Control] {
        /// Pin-based VM-execution controls.
        PinBasedControls = 0x4000, "pin_based_vm_execution_controls";
        /// Primary processor-based VM-execution controls.
        PrimaryProcControls = 0x4002, "primary_processor_based_vm_execution_controls";
        /// Exception bitmap: bit n set makes exception vector n exit.
        ExceptionBitmap = 0x4004, "exception_bitmap";
        /// Page-fault error-code mask.
        PageFaultErrorCodeMask = 0x4006, "page_fault_error_code_mask";
        /// Page-fault error-code match.
        PageFaultErrorCodeMatch = 0x4008, "page_fault_error_code_match";
        /// Number of valid CR3-target values.
        Cr3TargetCount = 0x400a, "cr3_target_count";
        /// Primary VM-exit controls.
        ExitControls = 0x400c, "vm_exit_controls";
        /// Number of entries in the VM-exit MSR-store area.
        ExitMsrStoreCount = 0x400e, "vm_exit_msr_store_count";
        /// Number of entries in the VM-exit MSR-load area.
        ExitMsrLoadCount = 0x4010, "vm_exit_msr_load_count";
        /// VM-entry controls.
        EntryControls = 0x4012, "vm_entry_controls";
        /// Number of entries in the VM-entry MSR-load area.
        EntryMsrLoadCount = 0x4014, "vm_entry_msr_load_count";
        /// VM-entry interruption-information field (event injection).
        EntryInterruptionInfo = 0x4016, "vm_entry_interruption_info";
        /// Error code delivered with an injected exception.
        EntryExceptionErrorCode = 0x4018, "vm_entry_exception_error_code";
        /// Instruction length for injected software interrupts and exceptions.
        EntryInstructionLength = 0x401a, "vm_entry_instruction_length";
        /// TPR threshold (TPR shadow).
        TprThreshold = 0x401c, "tpr_threshold";
        /// Secondary processor-based VM-execution controls.
        SecondaryProcControls = 0x401e, "secondary_processor_based_vm_execution_controls";
        /// PAUSE-loop exiting gap.
        PleGap = 0x4020, "ple_gap";
        /// PAUSE-loop exiting window.
        PleWindow = 0x4022, "ple_window";
        /// Instruction-timeout control (notify window).
        InstructionTimeoutControl = 0x4024, "instruction_timeout_control";
    }
    // 32-bit read-only data fields (SDM B.3.2)
    [Word32, ReadOnlyData] {
        /// VM-instruction error number of the last VMfailValid.
        VmInstructionError = 0x4400, "vm_instruction_error";
        /// Exit reason.
        ExitReason = 0x4402, "exit_reason";
        /// VM-exit interruption information.
        ExitInterruptionInfo = 0x4404, "exit_interruption_info";
        /// VM-exit interruption error code.
        ExitInterruptionErrorCode = 0x4406, "exit_interruption_error_code";
        /// IDT-vectoring information.
        IdtVectoringInfo = 0x4408, "idt_vectoring_info";
        /// IDT-vectoring error code.
        IdtVectoringErrorCode = 0x440a, "idt_vectoring_error_code";
        /// Length of the instruction that caused the exit.
        ExitInstructionLength = 0x440c, "exit_instruction_length";
        /// VM-exit instruction information.
        ExitInstructionInfo = 0x440e, "exit_instruction_info";
    }
    // 32-bit guest-state fields (SDM B.3.3)
    [Word32, GuestState] {
        /// Guest ES segment limit.
        GuestEsLimit = 0x4800, "guest_es_limit";
        /// Guest CS segment limit.
        GuestCsLimit = 0x4802, "guest_cs_limit";
        /// Guest SS segment limit.
        GuestSsLimit = 0x4804, "guest_ss_limit";
        /// Guest DS segment limit.
        GuestDsLimit = 0x4806, "guest_ds_limit";
        /// Guest FS segment limit.
        GuestFsLimit = 0x4808, "guest_fs_limit";
        /// Guest GS segment limit.
        GuestGsLimit = 0x480a, "guest_gs_limit";
        /// Guest LDTR segment limit.
        GuestLdtrLimit = 0x480c, "guest_ldtr_limit";
        /// Guest TR segment limit.
        GuestTrLimit = 0x480e, "guest_tr_limit";
        /// Guest GDTR limit.
        GuestGdtrLimit = 0x4810, "guest_gdtr_limit";
        /// Guest IDTR limit.
        GuestIdtrLimit = 0x4812, "guest_idtr_limit";
        /// Guest ES access rights.
        GuestEsAccessRights = 0x4814, "guest_es_access_rights";
        /// Guest CS access rights.
        GuestCsAccessRights = 0x4816, "guest_cs_access_rights";
        /// Guest SS access rights.
        GuestSsAccessRights = 0x4818, "guest_ss_access_rights";
        /// Guest DS access rights.
        GuestDsAccessRights = 0x481a, "guest_ds_access_rights";
        /// Guest FS access rights.
        GuestFsAccessRights = 0x481c, "guest_fs_access_rights";
        /// Guest GS access rights.
        GuestGsAccessRights = 0x481e, "guest_gs_access_rights";
        /// Guest LDTR access rights.
        GuestLdtrAccessRights = 0x4820, "guest_ldtr_access_rights";
        /// Guest TR access rights.
        GuestTrAccessRights = 0x4822, "guest_tr_access_rights";
        /// Guest interruptibility state.
        GuestInterruptibilityState = 0x4824, "guest_interruptibility_state";
        /// Guest activity state.
        GuestActivityState = 0x4826, "guest_activity_state";
        /// Guest SMBASE.
        GuestSmbase = 0x4828, "guest_smbase";
        /// Guest IA32_SYSENTER_CS.
        GuestIa32SysenterCs = 0x482a, "guest_ia32_sysenter_cs";
        /// VMX-preemption timer value.
        PreemptionTimerValue = 0x482e, "vmx_preemption_timer_value";
    }
    // 32-bit host-state fields (SDM B.3.4)
    [Word32, HostState] {
        /// Host IA32_SYSENTER_CS.
        HostIa32SysenterCs = 0x4c00, "host_ia32_sysenter_cs";
    }
    // Natural-width control fields (SDM B.4.1)
    [Natural, Control] {
        /// CR0 guest/host mask: set bits are owned by the host.
        Cr0GuestHostMask = 0x6000, "cr0_guest_host_mask";
        /// CR4 guest/host mask: set bits are owned by the host.
        Cr4GuestHostMask = 0x6002, "cr4_guest_host_mask";
        /// CR0 read shadow.
        Cr0ReadShadow = 0x6004, "cr0_read_shadow";
        /// CR4 read shadow.
        Cr4ReadShadow = 0x6006, "cr4_read_shadow";
        /// CR3-target value 0.
        Cr3TargetValue0 = 0x6008, "cr3_target_value_0";
        /// CR3-target value 1.
        Cr3TargetValue1 = 0x600a, "cr3_target_value_1";
        /// CR3-target value 2.
        Cr3TargetValue2 = 0x600c, "cr3_target_value_2";
        /// CR3-target value 3.
        Cr3TargetValue3 = 0x600e, "cr3_target_value_3";
    }
    // Natural-width read-only data fields (SDM B.4.2)
    [Natural, ReadOnlyData] {
        /// Exit qualification.
        ExitQualification = 0x6400, "exit_qualification";
        /// RCX before an I/O instruction that caused an SMI.
        IoRcx = 0x6402, "io_rcx";
        /// RSI before an I/O instruction that caused an SMI.
        IoRsi = 0x6404, "io_rsi";
        /// RDI before an I/O instruction that caused an SMI.
        IoRdi = 0x6406, "io_rdi";
        /// RIP of an I/O instruction that caused an SMI.
        IoRip = 0x6408, "io_rip";
        /// Guest-linear address of the access that caused the exit.
        GuestLinearAddress = 0x640a, "guest_linear_address";
    }
    // Natural-width guest-state fields (SDM B.4.3)
    [Natural, GuestState] {
        /// Guest CR0.
        GuestCr0 = 0x6800, "guest_cr0";
        /// Guest CR3.
        GuestCr3 = 0x6802, "guest_cr3";
        /// Guest CR4.
        GuestCr4 = 0x6804, "guest_cr4";
        /// Guest ES base.
        GuestEsBase = 0x6806, "guest_es_base";
        /// Guest CS base.
        GuestCsBase = 0x6808, "guest_cs_base";
        /// Guest SS base.
        GuestSsBase = 0x680a, "guest_ss_base";
        /// Guest DS base.
        GuestDsBase = 0x680c, "guest_ds_base";
        /// Guest FS base.
        GuestFsBase = 0x680e, "guest_fs_base";
        /// Guest GS base.
        GuestGsBase = 0x6810, "guest_gs_base";
        /// Guest LDTR base.
        GuestLdtrBase = 0x6812, "guest_ldtr_base";
        /// Guest TR base.
        GuestTrBase = 0x6814, "guest_tr_base";
        /// Guest GDTR base.
        GuestGdtrBase = 0x6816, "guest_gdtr_base";
        /// Guest IDTR base.
        GuestIdtrBase = 0x6818, "guest_idtr_base";
        /// Guest DR7.
        GuestDr7 = 0x681a, "guest_dr7";
        /// Guest RSP.
        GuestRsp = 0x681c, "guest_rsp";
        /// Guest RIP.
        GuestRip = 0x681e, "guest_rip";
        /// Guest RFLAGS.
        GuestRflags = 0x6820, "guest_rflags";
        /// Guest pending debug exceptions.
        GuestPendingDebugExceptions = 0x6822, "guest_pending_debug_exceptions";
        /// Guest IA32_SYSENTER_ESP.
        GuestIa32SysenterEsp = 0x6824, "guest_ia32_sysenter_esp";
        /// Guest IA32_SYSENTER_EIP.
        GuestIa32SysenterEip = 0x6826, "guest_ia32_sysenter_eip";
        /// Guest IA32_S_CET.
        GuestIa32SCet = 0x6828, "guest_ia32_s_cet";
        /// Guest shadow-stack pointer.
        GuestSsp = 0x682a, "guest_ssp";
        /// Guest IA32_INTERRUPT_SSP_TABLE_ADDR.
        GuestIa32InterruptSspTableAddr = 0x682c, "guest_ia32_interrupt_ssp_table_addr";
    }
    // Natural-width host-state fields (SDM B.4.4)
    [Natural, HostState] {
        /// Host CR0.
        HostCr0 = 0x6c00, "host_cr0";
        /// Host CR3.
        HostCr3 = 0x6c02, "host_cr3";
        /// Host CR4.
        HostCr4 = 0x6c04, "host_cr4";
        /// Host FS base.
        HostFsBase = 0x6c06, "host_fs_base";
        /// Host GS base.
        HostGsBase = 0x6c08, "host_gs_base";
        /// Host TR base.
        HostTrBase = 0x6c0a, "host_tr_base";
        /// Host GDTR base.
        HostGdtrBase = 0x6c0c, "host_gdtr_base";
        /// Host IDTR base.
        HostIdtrBase = 0x6c0e, "host_idtr_base";
        /// Host IA32_SYSENTER_ESP.
        HostIa32SysenterEsp = 0x6c10, "host_ia32_sysenter_esp";
        /// Host IA32_SYSENTER_EIP.
        HostIa32SysenterEip = 0x6c12, "host_ia32_sysenter_eip";
        /// Host RSP.
        HostRsp = 0x6c14, "host_rsp";
        /// Host RIP.
        HostRip = 0x6c16, "host_rip";
        /// Host IA32_S_CET.
        HostIa32SCet = 0x6c18, "host_ia32_s_cet";
        /// Host shadow-stack pointer.
        HostSsp = 0x6c1a, "host_ssp";
        /// Host IA32_INTERRUPT_SSP_TABLE_ADDR.
        HostIa32InterruptSspTableAddr = 0x6c1c, "host_ia32_interrupt_ssp_table_addr";
    }
}

impl VmcsField {
    /// The 32-bit encoding VMREAD and VMWRITE use for this field.
    pub const fn encoding(self) -> u32 {
        self as u32
    }

    /// Width, from encoding bits 14:13.
    pub const fn width(self) -> Width {
        Width::from_encoding(self.encoding())
    }

    /// Type, from encoding bits 11:10.
    pub const fn kind(self) -> FieldKind {
        FieldKind::from_encoding(self.encoding())
    }

    /// Whether this is the "high" access (bit 0) to the upper 32 bits of a
    /// 64-bit field.
    pub const fn is_high(self) -> bool {
        self.encoding() & ENCODING_HIGH != 0
    }

    /// Whether the field is VM-exit information, which VMWRITE may not
    /// change unless IA32_VMX_MISC bit 29 says so.
    pub const fn is_read_only(self) -> bool {
        matches!(self.kind(), FieldKind::ReadOnlyData)
    }

    /// Index, from encoding bits 9:1 (IA32_VMX_VMCS_ENUM reports the
    /// highest one in use).
    pub const fn index(self) -> u32 {
        (self.encoding() >> 1) & 0x1ff
    }

    /// Mask of the bits this access reads or writes: a high access is 32
    /// bits wide although its field is 64-bit.
    pub const fn value_mask(self) -> u64 {
        if self.is_high() {
            0xffff_ffff
        } else {
            self.width().mask()
        }
    }

    /// For a high access, the full 64-bit field it belongs to; otherwise
    /// the field itself.
    pub const fn full(self) -> VmcsField {
        match VmcsField::from_encoding(self.encoding() & !ENCODING_HIGH) {
            Some(f) => f,
            None => self,
        }
    }

    /// For a 64-bit field, its high-half access; `None` for other widths
    /// and for a field that already is a high access.
    pub const fn high(self) -> Option<VmcsField> {
        if matches!(self.width(), Width::Word64) && !self.is_high() {
            VmcsField::from_encoding(self.encoding() | ENCODING_HIGH)
        } else {
            None
        }
    }
}

impl fmt::Display for VmcsField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_encoding_round_trips() {
        for &f in VmcsField::ALL {
            assert_eq!(VmcsField::from_encoding(f.encoding()), Some(f), "{f:?}");
        }
    }

    #[test]
    fn full_slot_is_the_slot_of_the_full_field() {
        for &f in VmcsField::ALL {
            assert_eq!(f.full_slot(), f.full().slot(), "{f:?}");
        }
    }

    #[test]
    fn lookup_agrees_with_from_encoding() {
        // Every 16-bit encoding, and each with a bit beyond 15 set.
        for e in 0..0x1_0000u32 {
            assert_eq!(VmcsField::lookup(e), VmcsField::from_encoding(e), "{e:#x}");
            for high in [1 << 16, 1 << 31] {
                assert_eq!(VmcsField::lookup(e | high), None, "{:#x}", e | high);
            }
        }
    }

    #[test]
    fn table_has_no_duplicates_and_no_reserved_bits() {
        let mut encs: std::vec::Vec<u32> = VmcsField::ALL.iter().map(|f| f.encoding()).collect();
        for &e in &encs {
            assert_eq!(e & ENCODING_RESERVED, 0, "{e:#x}");
        }
        let n = encs.len();
        encs.sort_unstable();
        encs.dedup();
        assert_eq!(encs.len(), n);
        let mut names: std::vec::Vec<&str> = VmcsField::ALL.iter().map(|f| f.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
    }

    #[test]
    fn derived_properties_agree_with_table_groups() {
        for &f in VmcsField::ALL {
            let name = f.name();
            assert_eq!((f.width(), f.kind()), f.listed_as(), "{name}");
            assert_eq!(f.is_read_only(), f.listed_as().1 == FieldKind::ReadOnlyData);
            match f.kind() {
                FieldKind::HostState => assert!(name.starts_with("host_"), "{name}"),
                FieldKind::GuestState => assert!(
                    name.starts_with("guest_")
                        || name.starts_with("vmcs_link")
                        || name.starts_with("pml_index")
                        || name.starts_with("vmx_preemption"),
                    "{name}"
                ),
                FieldKind::ReadOnlyData => assert!(f.is_read_only()),
                FieldKind::Control => assert!(!f.is_read_only()),
            }
            // High accesses exist only for 64-bit fields, in pairs.
            if f.is_high() {
                assert_eq!(f.width(), Width::Word64, "{name}");
                assert_eq!(f.full().high(), Some(f));
                assert!(name.ends_with("_high"));
                assert_eq!(f.value_mask(), 0xffff_ffff);
            } else if f.width() == Width::Word64 {
                let h = f.high().expect("every 64-bit field has a high half");
                assert_eq!(h.encoding(), f.encoding() + 1);
                assert_eq!(h.full(), f);
            } else {
                assert_eq!(f.high(), None);
                assert_eq!(f.full(), f);
            }
        }
    }

    #[test]
    fn well_known_encodings() {
        use VmcsField::*;
        let spots = [
            (VirtualProcessorId, 0x0000),
            (PostedInterruptNotificationVector, 0x0002),
            (EptpIndex, 0x0004),
            (GuestEsSelector, 0x0800),
            (GuestTrSelector, 0x080e),
            (HostTrSelector, 0x0c0c),
            (IoBitmapA, 0x2000),
            (MsrBitmap, 0x2004),
            (TscOffset, 0x2010),
            (EptPointer, 0x201a),
            (EptPointerHigh, 0x201b),
            (XssExitingBitmap, 0x202c),
            (TscMultiplier, 0x2032),
            (TertiaryProcControls, 0x2034),
            (GuestPhysicalAddress, 0x2400),
            (VmcsLinkPointer, 0x2800),
            (GuestIa32Efer, 0x2806),
            (GuestPdpte3, 0x2810),
            (HostIa32Efer, 0x2c02),
            (PinBasedControls, 0x4000),
            (PrimaryProcControls, 0x4002),
            (ExitControls, 0x400c),
            (EntryControls, 0x4012),
            (SecondaryProcControls, 0x401e),
            (PleWindow, 0x4022),
            (VmInstructionError, 0x4400),
            (ExitReason, 0x4402),
            (IdtVectoringInfo, 0x4408),
            (ExitInstructionInfo, 0x440e),
            (GuestTrAccessRights, 0x4822),
            (GuestInterruptibilityState, 0x4824),
            (PreemptionTimerValue, 0x482e),
            (HostIa32SysenterCs, 0x4c00),
            (Cr3TargetValue3, 0x600e),
            (ExitQualification, 0x6400),
            (GuestLinearAddress, 0x640a),
            (GuestCr0, 0x6800),
            (GuestRip, 0x681e),
            (GuestRflags, 0x6820),
            (HostRsp, 0x6c14),
            (HostRip, 0x6c16),
        ];
        for (f, enc) in spots {
            assert_eq!(f.encoding(), enc, "{f:?}");
        }
    }

    #[test]
    fn widths_kinds_and_names() {
        use VmcsField::*;
        assert_eq!(GuestRip.width(), Width::Natural);
        assert_eq!(GuestRip.kind(), FieldKind::GuestState);
        assert_eq!(ExitReason.width(), Width::Word32);
        assert!(ExitReason.is_read_only());
        assert_eq!(VirtualProcessorId.width(), Width::Word16);
        assert_eq!(VirtualProcessorId.kind(), FieldKind::Control);
        assert_eq!(EptPointer.width(), Width::Word64);
        assert!(!EptPointer.is_high());
        assert!(EptPointerHigh.is_high());
        assert_eq!(HostRip.kind(), FieldKind::HostState);
        assert_eq!(GuestCr0.name(), "guest_cr0");
        assert_eq!(ExitQualification.name(), "exit_qualification");
        assert_eq!(IdtVectoringInfo.name(), "idt_vectoring_info");
        assert_eq!(EptPointerHigh.name(), "ept_pointer_high");
        assert_eq!(VmcsField::from_encoding(0x6c18 + 0x100), None);
        assert_eq!(VmcsField::from_encoding(0x0001), None);
        assert_eq!(Width::Word16.mask(), 0xffff);
        assert_eq!(Width::Natural.bits(), 64);
    }
}
